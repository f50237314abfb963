/**
 * The warm pool's bookkeeping on disk, with a fake slot maker: a claim takes a ticket once, the
 * pool refills to its size, what a stopped filler left half made is removed at the next start,
 * and a slot that failed to start is discarded and tried again.
 */
import { mkdtemp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
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
  it('fills to its size; a claim moves one ticket to the tenant, once, and the pool makes another', async () => {
    // Refilled a second after a claim: the third claim below comes first.
    const { p, made } = pool({ refillDelayMs: 1_000 });
    await p.start();
    await until('two ready slots', async () => (await p.tickets()).length === 2);
    expect(made).toHaveLength(2);

    // Two tenants claim at once: each gets its own slot, never the same.
    const [a, b] = await Promise.all([p.claim(CIDR, await target('a')), p.claim(CIDR, await target('b'))]);
    expect(a?.id).toMatch(/^pool-[0-9a-f]{8}$/);
    expect(b?.id).toMatch(/^pool-/);
    expect(a?.id).not.toBe(b?.id);
    expect(JSON.parse(await readFile(join(root, 'tenants', 'a', 'allocation.json'), 'utf8'))).toEqual(a);
    // None left: a third gets nothing (and provisions as without a pool).
    expect(await p.claim(CIDR, await target('c'))).toBeUndefined();

    // Another service range is never served from the pool.
    await until('refilled', async () => (await p.tickets()).length === 2);
    expect(await p.claim('10.100.0.0/16', await target('d'))).toBeUndefined();
    expect(await p.tickets()).toHaveLength(2);
    expect(made).toHaveLength(4);
  });

  it('removes at start what an earlier filler left: half-made slots, tickets of gone slots; keeps claimed and ready ones', async () => {
    const first = pool({ size: 2, refillDelayMs: 60_000 });
    await first.p.start();
    const [taken, left] = await until('two ready slots', async () => {
      const t = await first.p.tickets();
      return t.length === 2 && t;
    });
    expect(await first.p.claim(CIDR, await target('tenant'))).toMatchObject({ id: taken });
    await first.p.stop();
    // Half made: a slot directory without a ticket or a claim; a ticket whose slot is gone.
    await mkdir(join(root, 'tenants', 'pool-deadbeef'), { recursive: true });
    await writeFile(join(root, 'pool', 'pool-0badf00d.json'), '{}');
    await writeFile(join(root, 'pool', '.pool-12345678.tmp'), '{');

    const second = pool({ size: 1 });
    await second.p.start();
    expect(second.discarded).toEqual(['pool-deadbeef']);
    expect(await readdir(join(root, 'pool'))).not.toContain('pool-0badf00d.json');
    expect(await readdir(join(root, 'pool'))).not.toContain('.pool-12345678.tmp');
    // The claimed slot and the ready one stay; the pool is full, so nothing new is made.
    expect(await readdir(join(root, 'tenants'))).toEqual(expect.arrayContaining([taken, left, 'tenant']));
    expect(await second.p.tickets()).toEqual([left]);
    await new Promise((r) => setTimeout(r, 100));
    expect(second.made).toEqual([]);
  });

  it('one filler per state directory: a second pool claims but makes nothing', async () => {
    const first = pool({ size: 1 });
    await first.p.start();
    await until('one ready slot', async () => (await first.p.tickets()).length === 1);
    const second = pool({ size: 3 });
    await second.p.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(second.made).toEqual([]);
    expect(await second.p.claim(CIDR, await target('t'))).toMatchObject({ id: first.made[0] });
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
