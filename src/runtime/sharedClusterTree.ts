/**
 * clusterTree in one process for every tenant of a worker (ADR 12, decision 13), behind the
 * runtime interface, so activities, tests and tools ask for a tenant's clusterTree as before.
 *
 * A tenant's clusterTree spec (a process of its own with `--config=<file>`) becomes a
 * registration, `<dir>/<owner>.json`, and one process, owner `shared`, started from the same
 * command with `--tenants=<dir>` in place of the file, serves every registration
 * (src/clustertree/host.ts). The tenant keeps its own ports: readiness is its own `/readyz`.
 * The process writes what it serves (`<dir>/.served`, ServedState): a stop removes the
 * registration and waits until a pass that began after the removal no longer serves it (its tree
 * stopped, the syncs under way ended); a start that fails twice fails the wait at once, as a
 * process of its own that exits twice does. The process starts with the worker (`warm`) and runs
 * while the worker does, tenants or none: a tenant's clusterTree starts in a process that has
 * loaded its code.
 *
 * With `shared: false` every tenant has a process of its own (the default before); either way a
 * tenant is moved off the other form when its clusterTree is ensured, so a change of the setting
 * never leaves two trees for one tenant. Every other component goes to the inner runtime as it is.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Registration, SERVED_FILE, ServedState } from '../clustertree/registration.js';
import { KeyedLocks } from './locks.js';
import { hashSpec, type ProcessRuntime } from './processRuntime.js';
import { prober, readinessPauses } from './probe.js';
import {
  ComponentExitedError,
  FILES_DIGEST_ENV,
  ReadinessTimeoutError,
  lastMeaningfulLine,
  type ComponentName,
  type ComponentSpec,
  type ComponentStatus,
  type ControlPlaneRuntime,
} from './types.js';

/** The runtime owner of the shared process (tenant ids always hold two dashes). */
export const SHARED_OWNER = 'shared';
const NAME = 'clustertree' as const;
/** How often a readiness wait reads the registration and served state (its probes may be quicker). */
const CHECK_MS = 200;
/** Written to make the shared process read its registrations again (not one of them). */
const POKE_FILE = 'poke';

export interface SharedClusterTreeOptions {
  /** Where registrations are written: outside the inner runtime's own directories. */
  dir: string;
  /** false: a process per tenant, as before. */
  shared: boolean;
  /** How long a stop waits for the process to let the tenant go (then the process is restarted). */
  stopGraceMs?: number;
}

/**
 * The shared process itself exited twice while a tenant's start was waited for: no answer about
 * that tenant (another tenant, or something passing, may have ended it), so not the component's
 * ComponentExitedError; the step's next attempt waits again.
 */
export class SharedProcessExitedError extends Error {
  override readonly name = 'SharedProcessExitedError';
  constructor(
    readonly owner: string,
    logTail: string,
  ) {
    super(
      `the shared clusterTree process exited twice while ${owner} started: ${lastMeaningfulLine(logTail)}`,
    );
  }
}

/** A tenant's clusterTree was stopped while its start was being waited for. */
export class StoppedWhileStartingError extends Error {
  override readonly name = 'StoppedWhileStartingError';
  constructor(readonly owner: string) {
    super(`clusterTree of ${owner} was stopped while starting`);
  }
}

export class SharedClusterTreeRuntime implements ControlPlaneRuntime {
  /** Per tenant: its ensure, stop and remove in call order. `SHARED_OWNER`: the process's start and stop. */
  private readonly locks = new KeyedLocks();
  /** The shared process's restarts when a tenant's clusterTree was last ensured. */
  private readonly restartsAtEnsure = new Map<string, number>();

  constructor(
    private readonly inner: ProcessRuntime,
    private readonly opts: SharedClusterTreeOptions,
  ) {}

  private path(owner: string): string {
    return join(this.opts.dir, `${owner}.json`);
  }

  private async registration(owner: string): Promise<Registration | undefined> {
    try {
      return Registration.parse(JSON.parse(await readFile(this.path(owner), 'utf8')));
    } catch {
      return undefined;
    }
  }

  private async registrations(): Promise<Registration[]> {
    const files = await readdir(this.opts.dir).catch(() => [] as string[]);
    const all = await Promise.all(
      files
        .filter((f) => f.endsWith('.json') && !f.startsWith('.'))
        .map((f) => this.registration(f.slice(0, -'.json'.length))),
    );
    return all.filter((r): r is Registration => r !== undefined);
  }

  private async served(): Promise<ServedState | undefined> {
    try {
      return ServedState.parse(JSON.parse(await readFile(join(this.opts.dir, SERVED_FILE), 'utf8')));
    } catch {
      return undefined;
    }
  }

  /** The shared process's spec: the tenant's command with the directory for its file. */
  private hostSpec(spec: ComponentSpec): ComponentSpec {
    // The digest of a tenant's files is that tenant's registration's, not the process's.
    const { [FILES_DIGEST_ENV]: _digest, ...env } = spec.env ?? {};
    return {
      owner: SHARED_OWNER,
      name: NAME,
      command: spec.command,
      args: spec.args.map((a) => (a.startsWith('--config=') ? `--tenants=${this.opts.dir}` : a)),
      ...(Object.keys(env).length > 0 ? { env } : {}),
    };
  }

  private async hostStatus(): Promise<ComponentStatus | undefined> {
    return (await this.inner.list(SHARED_OWNER)).find((c) => c.name === NAME);
  }

  private sharable(spec: ComponentSpec): boolean {
    return spec.name === NAME && !spec.namespace && spec.args.some((a) => a.startsWith('--config='));
  }

  ensure(spec: ComponentSpec): Promise<ComponentStatus> {
    if (spec.name !== NAME || spec.namespace || spec.owner === SHARED_OWNER) return this.inner.ensure(spec);
    return this.locks.run(spec.owner, async () => {
      if (!this.opts.shared || !this.sharable(spec) || !spec.probe) {
        await this.unregister(spec.owner);
        return this.inner.ensure(spec);
      }
      // A process of its own, from before (or from `shared: false`), gives way first.
      await this.inner.stop(spec.owner, NAME);
      const config = spec.args.find((a) => a.startsWith('--config='))!.slice('--config='.length);
      const reg: Registration = { owner: spec.owner, config, hash: hashSpec(spec), probe: spec.probe.url };
      await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
      if (JSON.stringify(await this.registration(spec.owner)) !== JSON.stringify(reg)) {
        const file = this.path(spec.owner);
        await writeFile(`${file}.tmp`, JSON.stringify(reg), { mode: 0o600 });
        await rename(`${file}.tmp`, file);
      }
      const host = await this.locks.run(SHARED_OWNER, () => this.inner.ensure(this.hostSpec(spec)));
      this.restartsAtEnsure.set(spec.owner, host.restarts);
      return { owner: spec.owner, name: NAME, running: host.running, ...pid(host), restarts: host.restarts };
    });
  }

  /**
   * Starts the shared process before any tenant asks (the worker's start): the first tenant's
   * clusterTree then starts in a process that has loaded its code. `spec`: a tenant's, as
   * deployClusterTree makes it. A no-op with `shared: false`.
   */
  async warm(spec: ComponentSpec): Promise<void> {
    if (!this.opts.shared || !this.sharable(spec)) return;
    await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
    await this.locks.run(SHARED_OWNER, () => this.inner.ensure(this.hostSpec(spec)));
  }

  async waitReady(
    owner: string,
    name: ComponentName,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const reg = name === NAME ? await this.registration(owner) : undefined;
    if (!reg) return this.inner.waitReady(owner, name, timeoutMs, signal);
    const probe = prober({ url: reg.probe });
    const pause = readinessPauses(CHECK_MS);
    const deadline = Date.now() + timeoutMs;
    let lastError = 'not probed yet';
    let checkedAt = Date.now();
    // Whether the process serves this registration's tree. Until it does, a 200 is the tree of
    // the registration before, which serves the port until the process's next pass restarts the
    // tenant (a renewal's new files, ADR 10). Read before the probe: once the process says so,
    // the old tree has stopped, and any 200 after is the new one's.
    let current = false;
    for (;;) {
      try {
        if (!current) {
          const said = (await this.served())?.tenants[owner];
          current = said?.hash === reg.hash && said.serving;
        }
        const code = await probe();
        if (code === 200 && current) return;
        lastError =
          code === 200
            ? 'the previous registration still answers; the process has not restarted it yet'
            : `HTTP ${code}`;
      } catch (e) {
        lastError = (e as Error).message;
      }
      // The probe is cheap; the files below (every tenant's served state) are read as often as
      // before the quick probes, and at the deadline (the served state above, until it names
      // this registration: once, where nothing changed).
      if (Date.now() - checkedAt < CHECK_MS && Date.now() < deadline) {
        await sleep(pause());
        continue;
      }
      checkedAt = Date.now();
      if ((await this.registration(owner))?.hash !== reg.hash) throw new StoppedWhileStartingError(owner);
      // As for a process of its own: a second failed start is the component's answer.
      const said = (await this.served())?.tenants[owner];
      if (said?.hash === reg.hash && !said.serving && said.failures >= 2)
        throw new ComponentExitedError(owner, NAME, null, said.error ?? 'could not start');
      const host = await this.hostStatus();
      const baseline = this.restartsAtEnsure.get(owner);
      // (A process restarted by a stop's grace counts from 0 again.)
      if (host && baseline !== undefined && host.restarts < baseline) this.restartsAtEnsure.set(owner, 0);
      else if (host && baseline !== undefined && host.restarts - baseline >= 2)
        throw new SharedProcessExitedError(owner, await this.inner.logTail(SHARED_OWNER, NAME));
      if (Date.now() >= deadline) {
        const tail = (await this.logTail(owner, NAME, 5)).trim().split('\n').at(-1);
        throw new ReadinessTimeoutError(owner, NAME, timeoutMs, tail ? `${lastError}; ${tail}` : lastError);
      }
      await sleep(pause());
    }
  }

  /**
   * Removes the registration and waits until the process has let the tenant go: a pass that
   * began after the removal serves it no more. The wait holds this tenant's calls only. With
   * `shared: false` the process stops with its last tenant. One that has not let go after the
   * grace is restarted (the other tenants come back from their registrations).
   */
  private async unregister(owner: string): Promise<void> {
    if (!(await this.registration(owner))) return;
    await rm(this.path(owner), { force: true });
    // After the removal: a pass stamped later read the directory without it.
    const removedAt = Date.now();
    this.restartsAtEnsure.delete(owner);
    // The removal's own change notice may start a pass within the same millisecond, which the
    // check below cannot take: a second notice, a little later, starts one it can (a file the
    // process ignores but for the notice).
    await sleep(2);
    await writeFile(join(this.opts.dir, POKE_FILE), String(removedAt));
    const lastOne = !this.opts.shared && (await this.registrations()).length === 0;
    if (lastOne) {
      await this.locks.run(SHARED_OWNER, async () => {
        if ((await this.registrations()).length === 0) await this.inner.stop(SHARED_OWNER, NAME);
      });
    }
    if (!(await this.released(owner, removedAt))) {
      await this.locks.run(SHARED_OWNER, async () => {
        const spec = await this.inner.recordedSpec(SHARED_OWNER, NAME);
        await this.inner.stop(SHARED_OWNER, NAME);
        if (spec && (await this.registrations()).length > 0) await this.inner.ensure(spec);
      });
    }
    // Once no stop waits for it (another may have poked since: its own wait needs no file).
    await rm(join(this.opts.dir, POKE_FILE), { force: true });
  }

  /** Whether the process let the tenant go (or stopped) within the grace period. */
  private async released(owner: string, removedAt: number): Promise<boolean> {
    const deadline = Date.now() + (this.opts.stopGraceMs ?? 15_000);
    while (Date.now() < deadline) {
      if (!(await this.hostStatus())?.running) return true;
      const state = await this.served();
      if (state && state.pass > removedAt && !(owner in state.tenants)) return true;
      await sleep(50);
    }
    return false;
  }

  stop(owner: string, name: ComponentName): Promise<void> {
    if (name !== NAME || owner === SHARED_OWNER) return this.inner.stop(owner, name);
    return this.locks.run(owner, async () => {
      await this.unregister(owner);
      await this.inner.stop(owner, name);
    });
  }

  async remove(owner: string): Promise<void> {
    if (owner !== SHARED_OWNER) await this.locks.run(owner, () => this.unregister(owner));
    await this.inner.remove(owner);
  }

  /**
   * The inner runtime's components, and a registered tenant's clusterTree as the shared process
   * (its pid; `sharedBy`: how many tenants it serves, for dividing its memory and CPU).
   */
  async list(owner?: string): Promise<ComponentStatus[]> {
    const inner = await this.inner.list(owner);
    if (owner === undefined || owner === SHARED_OWNER) return inner;
    if (!(await this.registration(owner))) return inner;
    const host = await this.hostStatus();
    const sharedBy = (await this.registrations()).length;
    return [
      ...inner.filter((c) => c.name !== NAME),
      {
        owner,
        name: NAME,
        running: host?.running ?? false,
        ...pid(host),
        restarts: host?.restarts ?? 0,
        sharedBy,
      },
    ];
  }

  /**
   * The inner runtime's components come back, the shared process with them; under `per-tenant`
   * one left with no tenant (the setting changed while the worker was down) is stopped.
   */
  async resume(): Promise<ComponentStatus[]> {
    const resumed = await this.inner.resume();
    if (this.opts.shared) return resumed;
    return this.locks.run(SHARED_OWNER, async () => {
      if ((await this.registrations()).length > 0) return resumed;
      await this.inner.stop(SHARED_OWNER, NAME);
      return resumed.filter((c) => c.owner !== SHARED_OWNER);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  /** Stops supervising without stopping anything: what a crashed worker leaves behind. */
  detach(): void {
    this.inner.detach();
  }

  /** A registered tenant's lines of the shared process's log (read from its last 256 KiB). */
  async logTail(owner: string, name: ComponentName, lines = 20): Promise<string> {
    if (name !== NAME || !(await this.registration(owner))) return this.inner.logTail(owner, name, lines);
    const all = await this.inner.logTail(SHARED_OWNER, NAME, 5000, 256 * 1024);
    return all
      .split('\n')
      .filter((l) => l.includes(`"owner":"${owner}"`))
      .slice(-lines)
      .join('\n');
  }
}

function pid(s: ComponentStatus | undefined): { pid?: number } {
  return s?.pid === undefined ? {} : { pid: s.pid };
}
