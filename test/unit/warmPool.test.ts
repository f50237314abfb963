/**
 * The warm pool's bookkeeping on disk, with a fake slot maker: a claim takes a ticket once and
 * never overwrites a tenant's allocation, the pool refills to its size and replaces old slots,
 * one worker fills it (a lease another takes over once it is stale), what a stopped filler or
 * claim left is removed or put back at the next start, a pool of size 0 removes the slots an
 * earlier run left, and a slot that failed to start is discarded and tried again.
 */
import {
  link,
  mkdtemp,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TenantAllocation } from '../../src/activities/types.js';
import { WarmPool, type WarmPoolDeps } from '../../src/activities/warmPool.js';
import { createLogger } from '../../src/worker/logger.js';

const CIDR = '10.96.0.0/12';
let root: string;
let pools: WarmPool[];

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'kvc-pool-'));
  pools = [];
});
afterEach(async () => {
  for (const p of pools) await p.stop();
  await rm(root, { recursive: true, force: true });
});

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 5_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A pool whose slots are directories with an allocation.json; `fail` makes the next makes throw. */
function pool(over: Partial<WarmPoolDeps> = {}) {
  const made: string[] = [];
  const discarded: string[] = [];
  const tenantsDir = join(root, 'tenants');
  const deps: WarmPoolDeps = {
    size: 2,
    serviceCIDR: CIDR,
    poolDir: join(root, 'pool'),
    tenantsDir,
    refillDelayMs: 0,
    retryDelayMs: 10,
    logger: createLogger({ level: 'error' }),
    make: async (id, serviceCIDR) => {
      made.push(id);
      const a: TenantAllocation = {
        id,
        dir: join(tenantsDir, id),
        address: '127.0.0.1',
        ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
        serviceCIDR,
      };
      await mkdir(a.dir, { recursive: true });
      await writeFile(join(a.dir, 'allocation.json'), JSON.stringify(a));
      return a;
    },
    discard: async (id) => {
      discarded.push(id);
      await rm(join(tenantsDir, id), { recursive: true, force: true });
    },
    ...over,
  };
  const p = new WarmPool(deps);
  pools.push(p);
  return { p, made, discarded, deps };
}

const target = async (tenant: string) => {
  await mkdir(join(root, 'tenants', tenant), { recursive: true });
  return join(root, 'tenants', tenant, 'allocation.json');
};

describe('warm pool', () => {
  it('a claim moves one ticket to the tenant, once; none left, or another range: nothing', async () => {
    const { p, made } = pool({ refillDelayMs: 60_000 });
    await p.start();
    await until('two ready slots', async () => (await p.tickets()).length === 2);
    expect(made).toHaveLength(2);

    // Two tenants claim at once: each gets its own slot, never the same.
    const [a, b] = await Promise.all([p.claim(CIDR, await target('a')), p.claim(CIDR, await target('b'))]);
    expect(a?.id).toMatch(/^pool-[0-9a-f]{8}$/);
    expect(b?.id).toMatch(/^pool-/);
    expect(a?.id).not.toBe(b?.id);
    expect(JSON.parse(await readFile(join(root, 'tenants', 'a', 'allocation.json'), 'utf8'))).toEqual(a);
    // None left (the refill waits a minute after a claim): a third gets nothing.
    expect(await p.claim(CIDR, await target('c'))).toBeUndefined();
    expect(await readdir(join(root, 'pool'))).toEqual(['filler.lock']);
  });

  it('refills after a claim, and never serves another service range', async () => {
    const { p, made } = pool();
    await p.start();
    await until('two ready slots', async () => (await p.tickets()).length === 2);
    expect(await p.claim(CIDR, await target('a'))).toBeDefined();
    await until('refilled', async () => (await p.tickets()).length === 2);
    expect(made).toHaveLength(3);
    expect(await p.claim('10.100.0.0/16', await target('d'))).toBeUndefined();
    expect(await p.tickets()).toHaveLength(2);
  });

  it('never overwrites an allocation a tenant has: it gets that one, and the slot goes back', async () => {
    const { p } = pool({ size: 1 });
    await p.start();
    const [ready] = await until('one ready slot', async () => {
      const t = await p.tickets();
      return t.length === 1 && t;
    });
    const file = await target('t');
    const own = { id: 't', dir: join(root, 'tenants', 't') };
    await writeFile(file, JSON.stringify(own));
    expect(await p.claim(CIDR, file)).toEqual(own);
    expect(await p.tickets()).toEqual([ready]);
    // The tenant's directory gone (released meanwhile): an error, and the slot stays in the pool.
    await expect(p.claim(CIDR, join(root, 'tenants', 'gone', 'allocation.json'))).rejects.toThrow(/ENOENT/);
    expect(await p.tickets()).toEqual([ready]);
  });

  it('removes at start what an earlier run left; puts back a claim that stopped before it linked', async () => {
    const first = pool({ size: 3, refillDelayMs: 60_000 });
    await first.p.start();
    const [taken, stopped, left] = await until('three ready slots', async () => {
      const t = await first.p.tickets();
      return t.length === 3 && t;
    });
    expect(await first.p.claim(CIDR, await target('tenant'))).toMatchObject({ id: taken });
    await first.p.stop();
    // A claim that stopped between taking the ticket and linking it, a minute ago; one that
    // stopped after linking (its tenant has the slot).
    const old = new Date(Date.now() - 120_000);
    const unlinked = join(root, 'pool', `.claim-abcdef-${stopped}.json`);
    await rename(join(root, 'pool', `${stopped}.json`), unlinked);
    await utimes(unlinked, old, old);
    const linked = join(root, 'pool', `.claim-123456-${taken}.json`);
    await link(join(root, 'tenants', 'tenant', 'allocation.json'), linked);
    await utimes(linked, old, old);
    // Half made: a slot directory without a ticket or a claim; a ticket whose slot is gone.
    await mkdir(join(root, 'tenants', 'pool-deadbeef'), { recursive: true });
    await writeFile(join(root, 'pool', 'pool-0badf00d.json'), '{}');
    await writeFile(join(root, 'pool', '.pool-12345678.tmp'), '{');

    // Two ready slots afterwards, as many as it keeps: it makes none.
    const second = pool({ size: 2 });
    await second.p.start();
    await until('cleaned', () => Promise.resolve(second.discarded.length === 1));
    expect(second.discarded).toEqual(['pool-deadbeef']);
    const names = await readdir(join(root, 'pool'));
    expect(names).not.toContain('pool-0badf00d.json');
    expect(names).not.toContain('.pool-12345678.tmp');
    expect(names.filter((n) => n.startsWith('.claim-'))).toEqual([]);
    expect(await second.p.tickets()).toEqual([stopped, left].sort());
    expect(
      JSON.parse(await readFile(join(root, 'tenants', 'tenant', 'allocation.json'), 'utf8')),
    ).toMatchObject({
      id: taken,
    });
    expect(second.made).toEqual([]);
  });

  it('one filler per state directory; a stale lease is taken over', async () => {
    const first = pool({ size: 1 });
    await first.p.start();
    await until('one ready slot', async () => (await first.p.tickets()).length === 1);
    const second = pool({ size: 3, checkMs: 20 });
    await second.p.start();
    await new Promise((r) => setTimeout(r, 200));
    expect(second.made).toEqual([]);
    expect(await second.p.claim(CIDR, await target('t'))).toMatchObject({ id: first.made[0] });

    // The first filler stops touching its lease (stuck) for over a minute: a third takes over.
    await first.p.stop();
    await writeFile(join(root, 'pool', 'filler.lock'), 'someone else');
    const old = new Date(Date.now() - 120_000);
    await utimes(join(root, 'pool', 'filler.lock'), old, old);
    const third = pool({ size: 2 });
    await third.p.start();
    await until('two ready slots', async () => (await third.p.tickets()).length === 2);
    expect((await stat(join(root, 'pool', 'filler.lock'))).mtimeMs).toBeGreaterThan(old.getTime());
  });

  it('replaces slots older than their age limit, and a pool of size 0 removes the ready ones', async () => {
    const aging = pool({ size: 1, maxAgeMs: 300, checkMs: 20 });
    await aging.p.start();
    await until(
      'a slot replaced',
      async () => aging.discarded.length >= 1 && (await aging.p.tickets()).length === 1,
    );
    expect(aging.made.length).toBeGreaterThanOrEqual(2);
    expect(aging.discarded[0]).toBe(aging.made[0]);
    await aging.p.stop();

    const none = pool({ size: 0 });
    await none.p.start(); // the clean-up is done when start returns
    expect(await none.p.tickets()).toEqual([]);
    expect(none.discarded).toHaveLength(1);
    expect(await none.p.claim(CIDR, await target('t'))).toBeUndefined();
  });

  it('discards a slot that did not start, and tries again', async () => {
    let fail = 2;
    const { p, discarded, made } = pool({ size: 1 });
    const deps = (p as unknown as { deps: WarmPoolDeps }).deps;
    const make = deps.make;
    deps.make = async (id, cidr, signal) => {
      if (fail-- > 0) {
        made.push(id);
        throw new Error('etcd did not become ready');
      }
      return make(id, cidr, signal);
    };
    await p.start();
    await until('one ready slot', async () => (await p.tickets()).length === 1);
    expect(discarded).toEqual(made.slice(0, 2));
    expect(made).toHaveLength(3);
  });
});
