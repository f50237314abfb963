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

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
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

// Several waits a test, on a machine that may be busy with other tests.
describe('warm pool', { timeout: 30_000 }, () => {
  it('a claim moves one ticket to the tenant, once; none left, or another range: nothing', async () => {
    const { p, made } = pool({ refillDelayMs: 60_000 });
    await p.start();
    await until('two ready slots', async () => (await p.tickets()).length === 2);
    expect(made).toHaveLength(2);
    // Claims work without a filler: stopped, it makes no slot while the test counts them.
    await p.stop();

    // Two tenants claim at once: each gets its own slot, never the same.
    const [a, b] = await Promise.all([p.claim(CIDR, await target('a')), p.claim(CIDR, await target('b'))]);
    expect(a?.id).toMatch(/^pool-[0-9a-f]{8}$/);
    expect(b?.id).toMatch(/^pool-/);
    expect(a?.id).not.toBe(b?.id);
    expect(JSON.parse(await readFile(join(root, 'tenants', 'a', 'allocation.json'), 'utf8'))).toEqual(a);
    // None left: a third gets nothing, and nothing of the claims stays in the pool.
    expect(await p.claim(CIDR, await target('c'))).toBeUndefined();
    expect(await readdir(join(root, 'pool'))).toEqual([]);
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
    await p.stop();
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
    await first.p.stop();
    expect(await first.p.claim(CIDR, await target('tenant'))).toMatchObject({ id: taken });
    // Claims taken two minutes ago (the time is in the name): one that stopped before linking,
    // one that stopped after (its tenant has the slot).
    const then = Date.now() - 120_000;
    await rename(
      join(root, 'pool', `${stopped}.json`),
      join(root, 'pool', `.claim-${then}-abcdef-${stopped}.json`),
    );
    await link(
      join(root, 'tenants', 'tenant', 'allocation.json'),
      join(root, 'pool', `.claim-${then}-123456-${taken}.json`),
    );
    // Half made: a slot directory without a ticket or a claim; a ticket whose slot is gone; a
    // ticket written halfway two minutes ago, and one being written now (another worker's).
    await mkdir(join(root, 'tenants', 'pool-deadbeef'), { recursive: true });
    await writeFile(join(root, 'pool', 'pool-0badf00d.json'), '{}');
    const old = new Date(then);
    await writeFile(join(root, 'pool', '.pool-12345678.tmp'), '{');
    await utimes(join(root, 'pool', '.pool-12345678.tmp'), old, old);
    await writeFile(join(root, 'pool', '.pool-87654321.tmp'), '{');

    // Two ready slots afterwards, as many as it keeps: it makes none.
    const second = pool({ size: 2 });
    await second.p.start();
    await until('cleaned', async () => {
      const names = await readdir(join(root, 'pool'));
      return second.discarded.length === 1 && !names.includes('pool-0badf00d.json') && names;
    });
    expect(second.discarded).toEqual(['pool-deadbeef']);
    const names = await readdir(join(root, 'pool'));
    expect(names).not.toContain('.pool-12345678.tmp');
    expect(names).toContain('.pool-87654321.tmp');
    expect(names.filter((n) => n.startsWith('.claim-') || n.startsWith('.stale-'))).toEqual([]);
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
    await second.p.stop();
    await first.p.stop();
    await writeFile(join(root, 'pool', 'filler.lock'), 'someone else');
    const old = new Date(Date.now() - 120_000);
    await utimes(join(root, 'pool', 'filler.lock'), old, old);
    const third = pool({ size: 2 });
    await third.p.start();
    await until('two ready slots', async () => (await third.p.tickets()).length === 2);
    expect(third.made).toHaveLength(2); // the first one's slot was claimed above
    expect(await readFile(join(root, 'pool', 'filler.lock'), 'utf8')).not.toBe('someone else');
  });

  it('replaces slots older than their age limit', async () => {
    const aging = pool({ size: 1, maxAgeMs: 1_500, checkMs: 50 });
    await aging.p.start();
    await until(
      'a slot replaced',
      async () => aging.discarded.length >= 1 && (await aging.p.tickets()).length === 1,
    );
    expect(aging.made.length).toBeGreaterThanOrEqual(2);
    expect(aging.discarded[0]).toBe(aging.made[0]);
  });

  it('a pool of size 0 removes what an earlier run left, ready or half made, and hands out nothing', async () => {
    const first = pool({ size: 2 });
    await first.p.start();
    await until('two ready slots', async () => (await first.p.tickets()).length === 2);
    await first.p.stop();
    await mkdir(join(root, 'tenants', 'pool-deadbeef'), { recursive: true });
    const none = pool({ size: 0 });
    await none.p.start(); // the clean-up is done when start returns
    expect(await none.p.tickets()).toEqual([]);
    expect(none.discarded.sort()).toEqual([...first.made, 'pool-deadbeef'].sort());
    expect((await readdir(join(root, 'tenants'))).filter((d) => d.startsWith('pool-'))).toEqual([]);
    expect(await none.p.claim(CIDR, await target('t'))).toBeUndefined();

    // Only a half-made slot left (no file in the pool): removed too.
    await mkdir(join(root, 'tenants', 'pool-0badf00d'), { recursive: true });
    await rm(join(root, 'pool'), { recursive: true, force: true });
    const again = pool({ size: 0 });
    await again.p.start();
    expect(again.discarded).toEqual(['pool-0badf00d']);
  });

  it('a claim in progress is left alone by a filler that starts meanwhile, even for a slot made long ago', async () => {
    const first = pool({ size: 1 });
    await first.p.start();
    const [id] = await until('one ready slot', async () => {
      const t = await first.p.tickets();
      return t.length === 1 && t;
    });
    await first.p.stop();
    const old = new Date(Date.now() - 120_000);
    await utimes(join(root, 'pool', `${id}.json`), old, old); // made two minutes ago
    const taken = await (first.p as unknown as { take(id: string): Promise<string> }).take(id!);
    const second = pool({ size: 1, refillDelayMs: 60_000, checkMs: 20 });
    await second.p.start();
    await until('a slot made', () => Promise.resolve(second.made.length === 1));
    expect(second.discarded).toEqual([]);
    expect(await stat(taken)).toBeDefined();
    expect(await second.p.tickets()).not.toContain(id);
    // The claim goes through.
    await link(taken, await target('late'));
    expect(
      JSON.parse(await readFile(join(root, 'tenants', 'late', 'allocation.json'), 'utf8')),
    ).toMatchObject({ id });
  });

  it('finishes a removal that stopped: the slot is discarded, never handed out', async () => {
    const first = pool({ size: 1 });
    await first.p.start();
    const [id] = await until('one ready slot', async () => {
      const t = await first.p.tickets();
      return t.length === 1 && t;
    });
    await first.p.stop();
    await rename(join(root, 'pool', `${id}.json`), join(root, 'pool', `.retire-abcdef-${id}.json`));
    const second = pool({ size: 1, refillDelayMs: 60_000 });
    await second.p.start();
    await until('discarded', () => Promise.resolve(second.discarded.includes(id!)));
    await until('one new slot', async () => (await second.p.tickets()).length === 1);
    expect(await second.p.tickets()).not.toContain(id);
    expect((await readdir(join(root, 'pool'))).filter((n) => n.startsWith('.retire-'))).toEqual([]);
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
