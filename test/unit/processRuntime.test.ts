/**
 * The process runtime after a worker died between starting a component and recording it: the
 * next worker takes the running process over instead of starting a second one beside it, and
 * stop and remove find it too. Concurrent ensures of one component start it once.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { logTail } from '../../src/runtime/logFiles.js';
import { ProcessRuntime, type ProcessRuntimeOptions } from '../../src/runtime/processRuntime.js';
import { readinessPauses } from '../../src/runtime/probe.js';
import { filesDigestEnv, type ComponentSpec } from '../../src/runtime/types.js';
import { createLogger } from '../../src/worker/logger.js';

/** PIDs of the processes whose command line is exactly `argv`. */
function pidsRunning(argv: string[]): number[] {
  const wanted = argv.join('\0');
  return readdirSync('/proc')
    .filter((e) => /^[0-9]+$/.test(e))
    .filter((e) => {
      try {
        return readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0$/, '') === wanted;
      } catch {
        return false;
      }
    })
    .map(Number);
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** A runtime in a new directory, and a spec whose command line is this test's alone. */
function setUp(
  name: ComponentSpec['name'] = 'kube-apiserver',
  pollMs?: number,
  extra: { script?: string; options?: Partial<ProcessRuntimeOptions> } = {},
) {
  const root = join(tmpdir(), `kvc-runtime-${randomUUID().slice(0, 8)}`);
  const runtime = new ProcessRuntime({
    root,
    logger: createLogger({ level: 'error' }),
    stopGraceMs: 2_000,
    ...(pollMs ? { pollMs } : {}),
    ...extra.options,
  });
  const spec: ComponentSpec = {
    owner: `orphan-${randomUUID().slice(0, 8)}`,
    name,
    command: process.execPath,
    // The marker makes the command line this test's alone, as a tenant's paths and ports do.
    args: ['-e', extra.script ?? 'setTimeout(() => {}, 300_000)', `marker-${randomUUID()}`],
  };
  const argv = [spec.command, ...spec.args];
  cleanups.push(async () => {
    for (const pid of pidsRunning(argv)) process.kill(pid, 'SIGKILL');
    await runtime.shutdown();
    await rm(root, { recursive: true, force: true });
  });
  /** What a worker SIGKILLed inside spawn() leaves: the process, and at most an intent record. */
  const orphan = async (intent: boolean) => {
    if (intent) {
      mkdirSync(join(root, spec.owner), { recursive: true });
      writeFileSync(join(root, spec.owner, `${spec.name}.json`), JSON.stringify({ spec, specHash: 'x' }));
    }
    const child = spawn(spec.command, [...spec.args], { detached: true, stdio: 'ignore' });
    child.unref();
    await new Promise((r) => setTimeout(r, 300)); // until the node binary runs
    expect(pidsRunning(argv)).toEqual([child.pid]);
    return child.pid;
  };
  return { root, runtime, spec, argv, orphan };
}

describe('process runtime', () => {
  it("caps a running component's log: the older part moves aside, the process writes on from the start", async () => {
    // Numbered lines, 50 every 5 ms (~600 KB/s), and on forever.
    const script =
      'let i = 0; setInterval(() => { for (let k = 0; k < 50; k++) console.log(`line ${i++}`); }, 5);';
    const { root, runtime, spec } = setUp('kube-apiserver', undefined, {
      script,
      options: { logMaxBytes: 64 * 1024, logCheckMs: 50 },
    });
    const started = await runtime.ensure(spec);
    const log = join(root, spec.owner, `${spec.name}.log`);
    const numbers = (text: string) =>
      text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => {
          expect(l).toMatch(/^line [0-9]+$/); // no hole of NULs: the writer appends
          return Number(l.slice('line '.length));
        });
    for (let i = 0; i < 100 && !existsSync(`${log}.1`); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(`${log}.1`)).toBe(true);
    await new Promise((r) => setTimeout(r, 500)); // capped again and again meanwhile
    // The same process: capping does not restart it.
    expect((await runtime.list(spec.owner))[0]).toMatchObject({
      running: true,
      pid: started.pid,
      restarts: 0,
    });
    // Stopped, so that no copy is under way while the files are read (a stop waits for a cap).
    await runtime.stop(spec.owner, spec.name);
    // The cap holds (a check every 50 ms lets it grow by ~30 KB beyond it).
    expect(statSync(log).size).toBeLessThan(64 * 1024 + 200 * 1024);
    expect(statSync(`${log}.1`).size).toBeLessThan(64 * 1024 + 200 * 1024);
    const current = numbers(readFileSync(log, 'utf8'));
    const previous = numbers(readFileSync(`${log}.1`, 'utf8'));
    expect(current.length).toBeGreaterThan(0);
    // In order, and the older part before the newer (at most a few lines lost in between).
    expect(previous.at(-1)!).toBeLessThan(current[0]!);
    expect(current).toEqual([...current].sort((a, b) => a - b));
    const tail = numbers(await runtime.logTail(spec.owner, spec.name, 5));
    expect(tail).toEqual(current.slice(-5));
  });

  it("reads a log's tail on into its previous part when the log was just capped", async () => {
    const dir = join(tmpdir(), `kvc-logs-${randomUUID().slice(0, 8)}`);
    mkdirSync(dir);
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const log = join(dir, 'etcd.log');
    writeFileSync(`${log}.1`, Array.from({ length: 10 }, (_, i) => `old ${i}\n`).join(''));
    writeFileSync(log, 'new 0\nnew 1\n');
    expect(await logTail(log, 4, 16 * 1024)).toBe('old 8\nold 9\nnew 0\nnew 1\n');
    expect(await logTail(log, 2, 16 * 1024)).toBe('new 0\nnew 1\n');
    // Within the byte limit: the previous part adds only what fits.
    expect(await logTail(log, 4, 18)).toBe('old 9\nnew 0\nnew 1\n');
    expect(await logTail(join(dir, 'missing.log'), 4, 1024)).toBe('');
    // Bytes, not characters: 'ü' is two. A log larger than the limit is not continued.
    writeFileSync(log, 'über 0\nüber 1\n');
    expect(await logTail(log, 4, 16)).toBe('über 0\nüber 1\n');
    expect(await logTail(log, 4, 18)).toBe('9\nüber 0\nüber 1\n');
    // (Half a character at the cut, as a byte window gives.)
    expect(await logTail(log, 4, 15)).toBe('\ufffdber 0\nüber 1\n');
  });

  it('stops a component recorded only as an intent (no pid)', async () => {
    const { runtime, spec, argv, orphan } = setUp();
    await orphan(true);
    await runtime.stop(spec.owner, spec.name);
    expect(pidsRunning(argv)).toEqual([]);
  });

  it('removes a tenant whose component is recorded only as an intent', async () => {
    const { root, runtime, spec, argv, orphan } = setUp('etcd');
    await orphan(true);
    await runtime.remove(spec.owner);
    expect(pidsRunning(argv)).toEqual([]);
    expect(readdirSync(root)).toEqual([]);
  });

  it('starts a component once when it is ensured twice at the same time', async () => {
    const { runtime, spec, argv } = setUp();
    const [a, b] = await Promise.all([runtime.ensure(spec), runtime.ensure(spec)]);
    await new Promise((r) => setTimeout(r, 300));
    expect(a.pid).toBeDefined();
    expect(b.pid).toBe(a.pid);
    expect(pidsRunning(argv)).toEqual([a.pid]);
    await runtime.stop(spec.owner, spec.name);
    expect(pidsRunning(argv)).toEqual([]);
  });

  it('restarts a component whose files changed in place: listed all along, the new process recorded', async () => {
    const { runtime, spec } = setUp();
    const first = await runtime.ensure({ ...spec, env: filesDigestEnv({ 'a.conf': 'one' }) });
    // A renewal's new files: a new digest, the same component restarted.
    const renewed = { ...spec, env: filesDigestEnv({ 'a.conf': 'two' }) };
    let listings = 0;
    const missing: number[] = [];
    let done = false;
    const restart = runtime.ensure(renewed).finally(() => (done = true));
    while (!done) {
      const listed = await runtime.list(spec.owner);
      listings++;
      if (!listed.some((c) => c.name === spec.name)) missing.push(listings);
      await new Promise((r) => setImmediate(r));
    }
    const second = await restart;
    expect(listings).toBeGreaterThan(1);
    expect(missing).toEqual([]);
    expect(second.pid).toBeDefined();
    expect(second.pid).not.toBe(first.pid);
    await runtime.waitReady(spec.owner, spec.name, 5_000);
    expect((await runtime.list(spec.owner)).map((c) => [c.pid, c.running])).toEqual([[second.pid, true]]);
  });

  it('runs a component again as it was recorded when its replacement cannot start', async () => {
    const { root, runtime, spec } = setUp('kube-apiserver', 100);
    const first = await runtime.ensure({ ...spec, env: filesDigestEnv({ 'a.conf': 'one' }) });
    // The new process cannot be started: its log cannot be opened (a directory in its place).
    const log = runtime.logPath(spec.owner, spec.name);
    await rm(log);
    mkdirSync(log);
    await expect(runtime.ensure({ ...spec, env: filesDigestEnv({ 'a.conf': 'two' }) })).rejects.toThrow(
      /EISDIR/,
    );
    expect((await runtime.list(spec.owner)).map((c) => c.name)).toEqual([spec.name]);
    await rm(log, { recursive: true });
    // The supervisor starts the recorded one again: its spec, a new process.
    await vi.waitFor(
      async () => {
        const [c] = await runtime.list(spec.owner);
        expect(c?.running).toBe(true);
        expect(c?.pid).not.toBe(first.pid);
      },
      { timeout: 10_000, interval: 100 },
    );
    const record = JSON.parse(readFileSync(join(root, spec.owner, `${spec.name}.json`), 'utf8')) as {
      spec: ComponentSpec;
    };
    expect(record.spec.env).toEqual(filesDigestEnv({ 'a.conf': 'one' }));
  });

  it('adopts a running component nobody recorded, and stops it with the tenant', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kvc-runtime-'));
    const runtime = new ProcessRuntime({
      root,
      logger: createLogger({ level: 'error' }),
      stopGraceMs: 2_000,
    });
    const spec: ComponentSpec = {
      owner: `orphan-${randomUUID().slice(0, 8)}`,
      name: 'kube-apiserver',
      command: process.execPath,
      // The marker makes the command line this test's alone, as a tenant's paths and ports do.
      args: ['-e', 'setTimeout(() => {}, 300_000)', `marker-${randomUUID()}`],
    };
    const argv = [spec.command, ...spec.args];
    // What a worker SIGKILLed right after spawning leaves: the process, and no record of it.
    const orphan = spawn(spec.command, [...spec.args], { detached: true, stdio: 'ignore' });
    orphan.unref();
    cleanups.push(async () => {
      for (const pid of pidsRunning(argv)) process.kill(pid, 'SIGKILL');
      await runtime.shutdown();
      await rm(root, { recursive: true, force: true });
    });
    await new Promise((r) => setTimeout(r, 300)); // until the node binary runs

    const status = await runtime.ensure(spec);
    expect(status.pid).toBe(orphan.pid);
    expect(pidsRunning(argv)).toEqual([orphan.pid]);

    await runtime.stop(spec.owner, spec.name);
    expect(pidsRunning(argv)).toEqual([]);
  });

  it.each([
    [
      'its arguments',
      (spec: ComponentSpec): ComponentSpec => ({ ...spec, args: [...spec.args, '--changed'] }),
    ],
    ['only its environment', (spec: ComponentSpec): ComponentSpec => ({ ...spec, env: { CHANGED: '1' } })],
  ])(
    'stops what an intent of an older spec started before it starts the new spec (%s changed)',
    async (_, change) => {
      const { runtime, spec, orphan } = setUp();
      const old = await orphan(true);
      const changed = change(spec);
      const status = await runtime.ensure(changed);
      await new Promise((r) => setTimeout(r, 300));
      expect(status.pid).not.toBe(old);
      expect(pidsRunning([changed.command, ...changed.args])).toEqual([status.pid]);
      await runtime.stop(spec.owner, spec.name);
      expect(pidsRunning([changed.command, ...changed.args])).toEqual([]);
    },
    20_000,
  );

  it('says why a component whose binary is missing could not start', async () => {
    const { runtime, spec } = setUp('kube-controller-manager', 50);
    const missing: ComponentSpec = { ...spec, command: '/nonexistent/kube-controller-manager' };
    await runtime.ensure(missing);
    await expect(runtime.waitReady(spec.owner, spec.name, 15_000)).rejects.toThrow(
      /^kube-controller-manager exited before it was ready: failed to start: spawn \/nonexistent\/kube-controller-manager ENOENT$/,
    );
  }, 20_000);

  it('stops waiting for readiness once the signal aborts (a cancelled step), with its reason', async () => {
    const { runtime, spec } = setUp();
    // Nothing answers the probe: without the signal this waits the full minute.
    await runtime.ensure({ ...spec, probe: { url: 'http://127.0.0.1:9/readyz' } });
    const cancel = new AbortController();
    const t0 = Date.now();
    const waiting = runtime.waitReady(spec.owner, spec.name, 60_000, cancel.signal);
    setTimeout(() => cancel.abort(new Error('step cancelled')), 1_500); // past the fast first second
    await expect(waiting).rejects.toThrow(/^step cancelled$/);
    expect(Date.now() - t0).toBeLessThan(3_000);
  }, 20_000);

  it('tries a restart that failed again, once what made it fail is gone', async () => {
    const { root, runtime, spec } = setUp('kube-scheduler', 50);
    // A component that exits at once, and a restart that cannot open its log (as on a full disk).
    const crashing: ComponentSpec = { ...spec, args: ['-e', 'process.exit(1)', ...spec.args.slice(2)] };
    await runtime.ensure(crashing);
    const log = join(root, spec.owner, `${spec.name}.log`);
    rmSync(log);
    mkdirSync(log);
    const restarts = async () => (await runtime.list(spec.owner))[0]?.restarts ?? 0;
    const waitFor = async (what: string, check: () => Promise<boolean>) => {
      const deadline = Date.now() + 10_000;
      while (!(await check())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await waitFor('a failed restart', async () => (await restarts()) >= 1);
    const failedAt = await restarts();
    rmSync(log, { recursive: true });
    // The supervisor keeps trying (with its backoff), and now the start works: the log is back.
    await waitFor('another restart', async () => (await restarts()) > failedAt);
    // The start that worked opened the log as a file again.
    await waitFor('the log opened again', () => Promise.resolve(existsSync(log) && statSync(log).isFile()));
  }, 30_000);
});

describe('readiness waits', () => {
  afterEach(() => void vi.useRealTimers());

  it('probe every 25 ms for the first second from their start, then at the pause they had before', () => {
    vi.useFakeTimers({ now: 0 });
    const pause = readinessPauses(250);
    // The first second counts from the wait's start, not from its first pause.
    vi.setSystemTime(999);
    expect(pause()).toBe(25);
    vi.setSystemTime(1000);
    expect(pause()).toBe(250);
    vi.setSystemTime(60_000);
    expect(pause()).toBe(250);
    // Never longer than the pause they had.
    expect(readinessPauses(10)()).toBe(10);
  });
});
