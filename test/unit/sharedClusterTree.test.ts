/**
 * The shared clusterTree behind the runtime interface (src/runtime/sharedClusterTree.ts), with
 * the real process runtime and the built clusterTree: a tenant's spec becomes a registration the
 * shared process serves; `list` shows that process for the tenant; stopping the tenant closes its
 * port and keeps the process; a tenant of its own moves into the shared process and back out;
 * a worker set to per-tenant stops a shared process left with no tenant. The tenants' API
 * servers are an address nothing answers: a tree that waits for its first lists is enough.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clusterTreeProcess } from '../../src/activities/clusterTree.js';
import { SERVED_FILE } from '../../src/clustertree/registration.js';
import { repoRoot } from '../../src/runtime/binaries.js';
import { ProcessRuntime } from '../../src/runtime/processRuntime.js';
import {
  SHARED_OWNER,
  SharedClusterTreeRuntime,
  SharedProcessExitedError,
} from '../../src/runtime/sharedClusterTree.js';
import { ComponentExitedError, filesDigestEnv, type ComponentSpec } from '../../src/runtime/types.js';
import { createLogger } from '../../src/worker/logger.js';
import {
  UNREACHABLE_KUBECONFIG,
  freePort,
  readyzStatus,
  unreachableTreeConfig,
  until,
} from '../support/clusterTreeFakes.js';

/** The registrations in a shared clusterTree's directory (not its own `.served`). */
const registrations = async (d: string) =>
  (await readdir(d)).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
const ENTRY = join(repoRoot(), 'dist', 'src', 'clustertree', 'main.js');
const alive = (pid: number) =>
  readFile(`/proc/${pid}/stat`, 'utf8').then(
    (s) => !/^[ZX]/.test(s.slice(s.lastIndexOf(')') + 2)),
    () => false,
  );
/** Processes whose command line names `needle` (this test's directory). */
async function pidsMentioning(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(e)) continue;
    const cmdline = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) out.push(Number(e));
  }
  return out;
}
const argv = async (pid: number) =>
  (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0$/, '').split('\0');

describe('SharedClusterTreeRuntime', () => {
  let dir: string;
  let inner: ProcessRuntime;
  let runtimes: SharedClusterTreeRuntime[];
  const logger = createLogger({ level: 'error' });
  const make = (shared: boolean, stopGraceMs?: number) => {
    inner = new ProcessRuntime({ root: join(dir, 'runtime'), logger, pollMs: 200, stopGraceMs: 3000 });
    const r = new SharedClusterTreeRuntime(inner, {
      dir: join(dir, 'registrations'),
      shared,
      ...(stopGraceMs ? { stopGraceMs } : {}),
    });
    runtimes.push(r);
    return r;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kvc-shared-'));
    await writeFile(join(dir, 'kubeconfig'), UNREACHABLE_KUBECONFIG);
    runtimes = [];
  });
  afterEach(async () => {
    for (const r of runtimes) await r.shutdown().catch(() => undefined);
    // A runtime detached by a test that then failed leaves its processes: stopped by PID.
    for (const pid of await pidsMentioning(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  /** A tenant's clusterTree spec, as deployClusterTree makes it, and its status port. */
  async function tenant(owner: string): Promise<{ spec: ComponentSpec; port: number }> {
    const port = await freePort();
    const config = unreachableTreeConfig(owner, join(dir, 'kubeconfig'), port);
    await mkdir(join(dir, owner), { recursive: true });
    const file = join(dir, owner, 'config.json');
    const text = JSON.stringify(config);
    await writeFile(file, text);
    const proc = clusterTreeProcess(ENTRY, `--config=${file}`);
    return {
      spec: {
        owner,
        ...proc,
        // Each tenant's own digest: the shared process's spec is none of them (one process).
        env: { ...proc.env, ...filesDigestEnv({ 'config.json': text }) },
        probe: { url: `http://127.0.0.1:${port}/readyz` },
      },
      port,
    };
  }

  it('serves tenants from one process; a stopped tenant’s port closes and the process stays', async () => {
    const runtime = make(true);
    const [a, b] = [await tenant('ns-a-00000001'), await tenant('ns-b-00000002')];
    const sa = await runtime.ensure(a.spec);
    const sb = await runtime.ensure(b.spec);
    expect(sa.pid).toBeGreaterThan(0);
    expect(sb.pid).toBe(sa.pid);
    expect((await argv(sa.pid!)).at(-1)).toBe(`--tenants=${join(dir, 'registrations')}`);
    await until(
      'both ports served',
      async () => (await readyzStatus(a.port)) === 503 && (await readyzStatus(b.port)) === 503,
    );
    const listed = (await runtime.list(a.spec.owner)).find((c) => c.name === 'clustertree');
    expect(listed).toMatchObject({ running: true, pid: sa.pid, sharedBy: 2 });
    // Not ready (no API server answers): the wait says so, with what the probe saw.
    await expect(runtime.waitReady(a.spec.owner, 'clustertree', 500)).rejects.toThrow(/HTTP 503/);

    await runtime.stop(a.spec.owner, 'clustertree');
    expect(await readyzStatus(a.port)).toBe(0);
    expect(await readyzStatus(b.port)).toBe(503);
    expect(await alive(sa.pid!)).toBe(true);
    expect(await registrations(join(dir, 'registrations'))).toEqual([`${b.spec.owner}.json`]);
    expect((await runtime.list(a.spec.owner)).find((c) => c.name === 'clustertree')).toBeUndefined();
    await runtime.stop(b.spec.owner, 'clustertree');
    // Shared: kept for the next tenant.
    expect(await alive(sa.pid!)).toBe(true);
  });

  it('restarts a shared process that does not let a stopped tenant go in time; the others come back', async () => {
    const runtime = make(true, 1000);
    const [a, b] = [await tenant('ns-a-00000006'), await tenant('ns-b-00000007')];
    const { pid } = await runtime.ensure(a.spec);
    await runtime.ensure(b.spec);
    await until(
      'both ports served',
      async () => (await readyzStatus(a.port)) === 503 && (await readyzStatus(b.port)) === 503,
    );
    process.kill(pid!, 'SIGSTOP'); // it reads no registration, stops no tree, writes no state
    await runtime.stop(a.spec.owner, 'clustertree');
    expect(await alive(pid!)).toBe(false);
    const [host] = await runtime.list(SHARED_OWNER);
    expect(host?.running).toBe(true);
    expect(host?.pid).not.toBe(pid);
    await until('the other tenant served again', async () => (await readyzStatus(b.port)) === 503);
    expect(await readyzStatus(a.port)).toBe(0);
    expect((await runtime.list(b.spec.owner)).find((c) => c.name === 'clustertree')?.pid).toBe(host?.pid);
    // The file that pokes the process to read its directory again is not left behind.
    // (Leaving out the served state's file while the process writes it.)
    const left = (await readdir(join(dir, 'registrations'))).filter((f) => !f.endsWith('.tmp'));
    expect(left.sort()).toEqual(['.served', `${b.spec.owner}.json`]);
  }, 30_000);

  it('moves a tenant from a process of its own into the shared one and back; never both', async () => {
    const a = await tenant('ns-a-00000003');
    const own = await make(false).ensure(a.spec);
    expect((await argv(own.pid!)).at(-1)).toMatch(/^--config=/);
    await until('its own process serves', async () => (await readyzStatus(a.port)) === 503);
    inner.detach();

    const shared = await make(true).ensure(a.spec);
    expect(shared.pid).not.toBe(own.pid);
    expect(await alive(own.pid!)).toBe(false);
    await until('the shared process serves it', async () => (await readyzStatus(a.port)) === 503);
    inner.detach();

    // Back to a process each: it leaves the shared process, which, with no tenant left, stops.
    const back = make(false);
    await back.resume();
    const again = await back.ensure(a.spec);
    expect((await argv(again.pid!)).at(-1)).toMatch(/^--config=/);
    expect(await registrations(join(dir, 'registrations'))).toEqual([]);
    await until('the shared process stops', async () => !(await alive(shared.pid!)));
    expect(await back.list(SHARED_OWNER)).toEqual([]);
  });

  it('fails a wait as no answer about the tenant when the shared process itself exits twice', async () => {
    const runtime = make(true);
    const a = await tenant('ns-a-00000008');
    await runtime.ensure(a.spec);
    // Its API server answers nothing: it never gets ready, and the wait goes on meanwhile.
    const waited = runtime.waitReady(a.spec.owner, 'clustertree', 30_000).catch((e: unknown) => e);
    for (let i = 0; i < 2; i++) {
      const [before] = await runtime.list(SHARED_OWNER);
      process.kill(before!.pid!, 'SIGKILL');
      await until('the shared process started again', async () => {
        const [now] = await runtime.list(SHARED_OWNER);
        return now?.running === true && now.pid !== before!.pid;
      });
    }
    const err = await waited;
    expect(err).toBeInstanceOf(SharedProcessExitedError);
    // Not the component's own exit: the step (deployClusterTree) retries this one.
    expect(err).not.toBeInstanceOf(ComponentExitedError);
    expect((err as Error).message).toMatch(
      /^the shared clusterTree process exited twice while ns-a-00000008/,
    );
  }, 30_000);

  it('a tenant that cannot start fails its wait with why after a second try, as a process of its own does', async () => {
    const runtime = make(true);
    const a = await tenant('ns-a-00000005');
    // The port taken (the probes' connections are held open, and closed at the end).
    const held: Socket[] = [];
    const taken = createServer((socket) => held.push(socket));
    await new Promise<void>((r) => taken.listen(a.port, '127.0.0.1', r));
    try {
      await runtime.ensure(a.spec);
      const t0 = Date.now();
      const err = await runtime.waitReady(a.spec.owner, 'clustertree', 30_000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ComponentExitedError);
      expect((err as Error).message).toMatch(/EADDRINUSE/);
      expect(Date.now() - t0).toBeLessThan(15_000);
      // Its lines of the shared process's log say so too.
      expect(await runtime.logTail(a.spec.owner, 'clustertree')).toMatch(/could not start/);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((r) => taken.close(r));
    }
  }, 20_000);

  it('waits for the tree of a new registration, not the one before it that still answers', async () => {
    const runtime = make(true);
    const regs = join(dir, 'registrations');
    await mkdir(regs, { recursive: true });
    // What answers the tenant's port: the tree of the registration before (the process has not
    // passed over the new one yet), then the new one, on the same port.
    const server = createHttpServer((_, res) => res.end('ok'));
    const port = await freePort();
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    try {
      const owner = 'ns-a-00000001';
      const registration = {
        owner,
        config: join(dir, 'none.json'),
        hash: 'new',
        probe: `http://127.0.0.1:${port}/readyz`,
      };
      await writeFile(join(regs, `${owner}.json`), JSON.stringify(registration));
      const served = (hash: string) =>
        writeFile(
          join(regs, SERVED_FILE),
          JSON.stringify({ pass: Date.now(), tenants: { [owner]: { hash, serving: true, failures: 0 } } }),
        );
      await served('old');
      await expect(runtime.waitReady(owner, 'clustertree', 1_000)).rejects.toThrow(
        /previous registration still answers/,
      );
      await served('new');
      await runtime.waitReady(owner, 'clustertree', 5_000);
    } finally {
      server.close();
    }
  });

  it('a worker set to per-tenant stops a shared process left with no tenant when it resumes', async () => {
    const runtime = make(true);
    const a = await tenant('ns-a-00000004');
    await runtime.warm(a.spec);
    const [host] = await runtime.list(SHARED_OWNER);
    expect(host?.running).toBe(true);
    inner.detach();
    const resumed = await make(false).resume();
    expect(resumed.filter((c) => c.owner === SHARED_OWNER)).toEqual([]);
    expect(await alive(host!.pid!)).toBe(false);
  });
});
