/**
 * The process runtime: every component is a supervised local process on the worker's machine.
 *
 * Processes start in their own process group and outlive the worker, so a worker that crashes
 * leaves its tenants serving. Each wanted component has a record file (spec, pid, process start
 * time); a new runtime adopts a process whose pid, start time and command still match, and
 * restarts the component otherwise, so there is never a second copy.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { closeSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../worker/logger.js';
import { KeyedLocks } from './locks.js';
import { capLog, logSize, logTail } from './logFiles.js';
import { prober, readinessPauses } from './probe.js';
import { findByCommandLine, procCommand, procStartTime } from './procfs.js';
import {
  ComponentExitedError,
  ReadinessTimeoutError,
  type ComponentName,
  type ComponentSpec,
  type ComponentStatus,
  type ControlPlaneRuntime,
} from './types.js';

interface Record {
  spec: ComponentSpec;
  specHash: string;
  pid?: number | undefined;
  startTime?: string | undefined;
  /** On an intent (no pid yet): the runtime that is starting it. */
  intentBy?: string | undefined;
}

interface Supervised {
  record: Record;
  child?: ChildProcess;
  alive: boolean;
  exits: number;
  /** `exits` when ensure() last ran: waitReady counts exits from there. */
  exitsBaseline: number;
  lastExitCode: number | null;
  /** Why the last start failed before the process ran (spawn's error: a missing binary). */
  startError?: string | undefined;
  restarts: number;
  nextRestartAt: number;
  backoffMs: number;
  stopping: boolean;
}

export interface ProcessRuntimeOptions {
  /** Records and logs live under <root>/<owner>/. */
  root: string;
  logger: Logger;
  /** How often the supervisor checks its processes. */
  pollMs?: number;
  /** Grace period between SIGTERM and SIGKILL. */
  stopGraceMs?: number;
  /**
   * A component's log is capped at this size (64 MiB) when it is checked: the older part moves
   * to `<name>.log.1`, so each takes about twice this on disk (plus what is written between two
   * checks).
   */
  logMaxBytes?: number;
  /** How often log sizes are checked (30 s). */
  logCheckMs?: number;
}

/** Clients stop before their servers; resume() starts in the opposite order. */
const STOP_ORDER: readonly ComponentName[] = [
  'clustertree',
  'coredns',
  'kube-proxy',
  'kubelet',
  'containerd',
  'registry',
  'kube-scheduler',
  'kube-controller-manager',
  'local-path-provisioner',
  'kwok',
  'kube-apiserver',
  'etcd',
  'temporal',
];
const rank = (n: ComponentName): number => STOP_ORDER.indexOf(n);

/**
 * What identifies a running process: its spec without what only other runtimes read (files,
 * writes, ports), so a spec that gains those fields matches the process an older version
 * started and restarts nothing.
 */
export function hashSpec(spec: ComponentSpec): string {
  const {
    files: _files,
    writes: _writes,
    ports: _ports,
    namespace: _namespace,
    service: _service,
    health: _health,
    tolerates: _tolerates,
    ...process
  } = spec;
  return createHash('sha256').update(JSON.stringify(process)).digest('hex');
}

export class ProcessRuntime implements ControlPlaneRuntime {
  private readonly procs = new Map<string, Supervised>();
  /**
   * Ensure and stop of a component, one at a time: two concurrent ensures (an activity retried
   * while its first attempt still runs, a resume beside an activity) would otherwise both find
   * nothing running and start it twice.
   */
  private readonly locks = new KeyedLocks();
  private readonly timer: NodeJS.Timeout;
  private readonly logTimer: NodeJS.Timeout;
  private cappingLogs = false;
  private readonly pollMs: number;
  private readonly stopGraceMs: number;
  private closed = false;

  /** Names this runtime's intents, so that it never takes another runtime's for its own. */
  private readonly id = randomUUID();

  constructor(private readonly opts: ProcessRuntimeOptions) {
    this.pollMs = opts.pollMs ?? 1000;
    this.stopGraceMs = opts.stopGraceMs ?? 10_000;
    this.timer = setInterval(() => this.supervise(), this.pollMs);
    this.timer.unref();
    this.logTimer = setInterval(() => void this.capLogs(), opts.logCheckMs ?? 30_000);
    this.logTimer.unref();
  }

  /**
   * Caps the logs of the components this runtime supervises, one at a time. Each under its
   * component's lock, and only while this runtime still has it and the record is its own: a
   * stop (and a tenant's removal after it) never races a cap, and of two workers sharing the
   * state directory only the one that runs the process caps its log.
   */
  private async capLogs(): Promise<void> {
    if (this.cappingLogs) return;
    this.cappingLogs = true;
    try {
      const max = this.opts.logMaxBytes ?? 64 * 1024 * 1024;
      for (const [key, s] of [...this.procs.entries()]) {
        const { owner, name } = s.record.spec;
        const path = this.logPath(owner, name);
        // Most logs are small: only a large one takes the lock and has its record read.
        if ((await logSize(path)) <= max) continue;
        const capped = await this.locks
          .run(key, async () => this.procs.get(key) === s && this.stillOurs(s) && capLog(path, max))
          .catch((e: unknown) => {
            this.opts.logger.warn('cannot cap a component log', {
              owner,
              component: name,
              error: (e as Error).message,
            });
            return false;
          });
        if (capped) this.opts.logger.info('component log capped', { owner, component: name });
      }
    } finally {
      this.cappingLogs = false;
    }
  }

  private key(owner: string, name: string): string {
    return `${owner}/${name}`;
  }
  private dir(owner: string): string {
    return join(this.opts.root, owner);
  }
  private recordPath(owner: string, name: string): string {
    return join(this.dir(owner), `${name}.json`);
  }
  logPath(owner: string, name: string): string {
    return join(this.dir(owner), `${name}.log`);
  }

  /** Synchronous on purpose: start() records a process before anything else can happen. */
  private writeRecord(r: Record): void {
    const path = this.recordPath(r.spec.owner, r.spec.name);
    writeFileSync(`${path}.tmp`, JSON.stringify(r, null, 2));
    renameSync(`${path}.tmp`, path);
  }

  /** False once someone else (another worker's stop or remove) took the component away. */
  private stillOurs(s: Supervised): boolean {
    try {
      const r = JSON.parse(
        readFileSync(this.recordPath(s.record.spec.owner, s.record.spec.name), 'utf8'),
      ) as Record;
      // A record without a pid is an intent: ours when this runtime wrote it (a start that failed).
      const pidOk = r.pid === s.record.pid || (r.pid === undefined && r.intentBy === this.id);
      return pidOk && r.specHash === s.record.specHash;
    } catch {
      return false;
    }
  }

  private isAlive(s: Supervised): boolean {
    const pid = s.record.pid;
    if (pid === undefined) return false;
    if (s.child) return s.alive;
    return procStartTime(pid) === s.record.startTime;
  }

  ensure(spec: ComponentSpec): Promise<ComponentStatus> {
    return this.locks.run(this.key(spec.owner, spec.name), () => this.ensureNow(spec));
  }

  private async ensureNow(spec: ComponentSpec): Promise<ComponentStatus> {
    if (this.closed) throw new Error('runtime is shut down');
    await mkdir(this.dir(spec.owner), { recursive: true });
    const key = this.key(spec.owner, spec.name);
    const specHash = hashSpec(spec);
    let s = this.procs.get(key);
    // One of an older spec stays listed (stopping: never restarted as it was) until the new one
    // replaces it: a caller that decides by what runs (a renewal's retry) still finds it.
    let replaced: Supervised | undefined;
    // A replacement that fails before its process exists: the one replaced runs again as it was
    // recorded (the supervisor restarts it), there for a caller that decides by what runs and
    // for the next ensure to replace.
    const restore = () => {
      if (!replaced) return;
      replaced.stopping = false;
      this.procs.set(key, replaced);
      try {
        this.writeRecord(replaced.record); // over the successor's intent, if that was written
      } catch {
        // Not writable either: the supervisor finds the record not its own and lets it go.
      }
    };
    if (s && s.record.specHash !== specHash) {
      this.opts.logger.info('component spec changed; restarting', {
        owner: spec.owner,
        component: spec.name,
      });
      await this.stopSupervised(s);
      replaced = s;
      s = undefined;
    }
    try {
      if (!s) {
        const record = await this.readRecord(spec.owner, spec.name);
        s = await this.adopt(record, specHash);
        // An intent of an older spec may name a process that runs it, holding the ports; its
        // command line may equal the new spec's (only env or probe changed): stop it first.
        if (!s && record && record.specHash !== specHash) await this.stopUnrecorded(record);
        s ??= (await this.adoptUnrecorded(spec, specHash)) ?? this.fresh(spec, specHash);
        this.procs.set(key, s);
      }
      // No await between here and start(): the supervisor must never see this entry half made.
      s.exitsBaseline = s.exits;
      if (!this.isAlive(s)) this.start(s); // start() writes the record; an adopted one is on disk
    } catch (e) {
      if (!s?.child) restore(); // nothing spawned, nothing recorded of it
      throw e;
    }
    return this.status(s);
  }

  private fresh(spec: ComponentSpec, specHash: string): Supervised {
    return {
      record: { spec, specHash },
      alive: false,
      exits: 0,
      exitsBaseline: 0,
      lastExitCode: null,
      restarts: 0,
      nextRestartAt: 0,
      backoffMs: 1000,
      stopping: false,
    };
  }

  private static running(record: Record | undefined): record is Record & { pid: number } {
    return (
      record?.pid !== undefined &&
      procStartTime(record.pid) === record.startTime &&
      procCommand(record.pid) === record.spec.command
    );
  }

  /** Takes over a process a previous runtime started, if it is still the same process. */
  private async adopt(record: Record | undefined, specHash: string): Promise<Supervised | undefined> {
    if (!ProcessRuntime.running(record)) return undefined;
    const s = this.fresh(record.spec, record.specHash);
    s.record = record;
    s.alive = true;
    if (record.specHash !== specHash) {
      // An older version of the component runs: stop it; the caller starts the wanted one.
      await this.stopSupervised(s);
      return undefined;
    }
    this.opts.logger.info('adopted running component', {
      owner: record.spec.owner,
      component: record.spec.name,
      pid: record.pid,
    });
    return s;
  }

  /**
   * Takes over a process running exactly this spec's command line that no record names: a
   * worker killed between starting a component and recording it leaves one, holding the
   * component's port. Its command line (the tenant's own paths and ports) can only be this
   * component's. Without this, a new worker would start a second one that cannot bind, while
   * the unknown one outlives the tenant.
   */
  private async adoptUnrecorded(spec: ComponentSpec, specHash: string): Promise<Supervised | undefined> {
    const found = await findByCommandLine(spec.command, spec.args);
    if (!found) return undefined;
    const s = this.fresh(spec, specHash);
    s.record.pid = found.pid;
    s.record.startTime = found.startTime;
    s.alive = true;
    this.writeRecord(s.record);
    this.opts.logger.warn('adopted a running component nobody had recorded', {
      owner: spec.owner,
      component: spec.name,
      pid: found.pid,
    });
    return s;
  }

  /** The spec a component was last ensured with, from its record (undefined: none recorded). */
  async recordedSpec(owner: string, name: ComponentName): Promise<ComponentSpec | undefined> {
    return (await this.readRecord(owner, name))?.spec;
  }

  private async readRecord(owner: string, name: string): Promise<Record | undefined> {
    try {
      return JSON.parse(await readFile(this.recordPath(owner, name), 'utf8')) as Record;
    } catch {
      return undefined;
    }
  }

  private start(s: Supervised): void {
    const { spec } = s.record;
    // The intent, recorded before the process exists: a worker killed inside spawn() leaves a
    // record without a pid, by which stop and remove still find the process (findByCommandLine).
    // Written from a copy: a start that throws below leaves `s` as it was, and the supervisor
    // tries again.
    this.writeRecord({ ...s.record, pid: undefined, startTime: undefined, intentBy: this.id });
    const log = openSync(this.logPath(spec.owner, spec.name), 'a');
    let child: ChildProcess;
    try {
      child = spawn(spec.command, [...spec.args], {
        detached: true,
        stdio: ['ignore', log, log],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...spec.env },
      });
    } finally {
      closeSync(log);
    }
    child.unref();
    s.child = child;
    s.alive = child.pid !== undefined;
    s.record.pid = child.pid;
    s.record.startTime = child.pid === undefined ? undefined : procStartTime(child.pid);
    s.startError = undefined;
    child.on('error', (err) => {
      this.opts.logger.error('component failed to start', {
        owner: spec.owner,
        component: spec.name,
        error: err.message,
      });
      if (child.pid === undefined) s.startError = err.message;
      s.alive = false;
      s.exits++;
    });
    child.on('exit', (code, signal) => {
      if (s.child !== child) return;
      s.alive = false;
      s.lastExitCode = code;
      if (!s.stopping) {
        s.exits++;
        this.opts.logger.warn('component exited', { owner: spec.owner, component: spec.name, code, signal });
      }
    });
    // Recorded before anything else can happen (the handlers above see an exit even if this
    // write throws): a worker that dies now leaves a record a new runtime adopts. One killed
    // inside spawn() (it returns once the child has exec'd) leaves the intent without a pid:
    // ensure, stop and remove find the process by its command line.
    this.writeRecord(s.record);
    if (child.pid !== undefined)
      this.opts.logger.info('component started', { owner: spec.owner, component: spec.name, pid: child.pid });
  }

  /** Restarts crashed components, with exponential backoff up to 30 s. */
  private supervise(): void {
    const now = Date.now();
    for (const [key, s] of this.procs) {
      // No pid: a start that failed (spawn's error, a missing binary), tried again like an exit.
      if (s.stopping || this.isAlive(s)) continue;
      if (!this.stillOurs(s)) {
        // Stopped or removed through another runtime sharing the state directory.
        this.procs.delete(key);
        continue;
      }
      if (s.nextRestartAt === 0) {
        s.nextRestartAt = now + s.backoffMs;
        s.backoffMs = Math.min(s.backoffMs * 2, 30_000);
        if (!s.child) s.exits++; // an adopted process we could not wait for, or a start that made none
        continue;
      }
      if (now < s.nextRestartAt) continue;
      s.nextRestartAt = 0;
      s.restarts++;
      try {
        this.start(s);
      } catch (e) {
        this.opts.logger.error('component restart failed', {
          owner: s.record.spec.owner,
          component: s.record.spec.name,
          error: (e as Error).message,
        });
      }
    }
  }

  async waitReady(
    owner: string,
    name: ComponentName,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const s = this.procs.get(this.key(owner, name));
    if (!s) throw new Error(`${name} of ${owner} is not running`);
    const probe = s.record.spec.probe && prober(s.record.spec.probe);
    const pause = readinessPauses(250);
    const deadline = Date.now() + timeoutMs;
    let lastError = 'not probed yet';
    for (;;) {
      if (signal?.aborted) throw signal.reason as Error;
      // One automatic restart may be a fluke; a second exit before ready is the component's answer.
      if (s.exits - s.exitsBaseline >= 2) {
        const why = s.startError ? `failed to start: ${s.startError}` : await this.logTail(owner, name);
        throw new ComponentExitedError(owner, name, s.lastExitCode, why);
      }
      if (!probe) {
        if (this.isAlive(s)) return;
      } else {
        try {
          const code = await probe();
          if (code === 200) return;
          lastError = `HTTP ${code}`;
        } catch (e) {
          lastError = (e as Error).message;
        }
      }
      if (Date.now() >= deadline) throw new ReadinessTimeoutError(owner, name, timeoutMs, lastError);
      await sleep(pause(), undefined, signal ? { signal } : {}).catch(() => undefined);
    }
  }

  private kill(pid: number, signal: NodeJS.Signals): void {
    try {
      process.kill(-pid, signal); // the whole process group
    } catch {
      try {
        process.kill(pid, signal);
      } catch {
        /* already gone */
      }
    }
  }

  private async stopSupervised(s: Supervised): Promise<void> {
    s.stopping = true;
    const pid = s.record.pid;
    if (pid === undefined || !this.isAlive(s)) return;
    this.kill(pid, 'SIGTERM');
    const deadline = Date.now() + this.stopGraceMs;
    while (this.isAlive(s) && Date.now() < deadline) await sleep(100);
    if (this.isAlive(s)) {
      this.opts.logger.warn('component did not stop in time; killing', {
        owner: s.record.spec.owner,
        component: s.record.spec.name,
        pid,
      });
      this.kill(pid, 'SIGKILL');
      while (this.isAlive(s)) await sleep(50);
    }
    this.opts.logger.info('component stopped', {
      owner: s.record.spec.owner,
      component: s.record.spec.name,
      pid,
    });
  }

  stop(owner: string, name: ComponentName): Promise<void> {
    return this.locks.run(this.key(owner, name), () => this.stopNow(owner, name));
  }

  private async stopNow(owner: string, name: ComponentName): Promise<void> {
    const key = this.key(owner, name);
    let s = this.procs.get(key);
    if (!s) {
      const record = await this.readRecord(owner, name);
      if (ProcessRuntime.running(record)) {
        s = this.fresh(record.spec, record.specHash);
        s.record = record;
      } else if (record) {
        await this.stopUnrecorded(record);
      }
    }
    if (s) await this.stopSupervised(s);
    this.procs.delete(key);
    await rm(this.recordPath(owner, name), { force: true });
  }

  /**
   * Stops a process running `record`'s spec that the record does not name: one a worker started
   * and died before it could write the pid.
   */
  private async stopUnrecorded(record: Record): Promise<void> {
    if (ProcessRuntime.running(record)) return;
    const found = await findByCommandLine(record.spec.command, record.spec.args);
    if (!found) return;
    this.opts.logger.warn('stopping a running component nobody had recorded', {
      owner: record.spec.owner,
      component: record.spec.name,
      pid: found.pid,
    });
    const s = this.fresh(record.spec, record.specHash);
    s.record = { ...record, ...found };
    await this.stopSupervised(s);
  }

  async remove(owner: string): Promise<void> {
    const names = new Set<ComponentName>();
    for (const s of this.procs.values()) if (s.record.spec.owner === owner) names.add(s.record.spec.name);
    for (const f of await readdir(this.dir(owner)).catch(() => [] as string[])) {
      if (f.endsWith('.json')) names.add(f.slice(0, -'.json'.length) as ComponentName);
    }
    for (const name of STOP_ORDER.filter((n) => names.has(n))) await this.stop(owner, name);
    await rm(this.dir(owner), { recursive: true, force: true });
  }

  private status(s: Supervised): ComponentStatus {
    const alive = this.isAlive(s);
    return {
      owner: s.record.spec.owner,
      name: s.record.spec.name,
      running: alive,
      ...(alive && s.record.pid !== undefined ? { pid: s.record.pid } : {}),
      restarts: s.restarts,
      command: s.record.spec.command,
    };
  }

  list(owner?: string): Promise<ComponentStatus[]> {
    return Promise.resolve(
      [...this.procs.values()]
        .filter((s) => owner === undefined || s.record.spec.owner === owner)
        .map((s) => this.status(s)),
    );
  }

  /**
   * Brings back every recorded component. Control planes come back in parallel; within one,
   * each component is started after the one it needs is ready (etcd, then the apiserver, ...).
   */
  async resume(readinessTimeoutMs = 60_000): Promise<ComponentStatus[]> {
    const owners = await readdir(this.opts.root).catch(() => [] as string[]);
    const perOwner = await Promise.all(
      owners.map(async (owner) => {
        const records: Record[] = [];
        for (const f of await readdir(this.dir(owner)).catch(() => [] as string[])) {
          if (!f.endsWith('.json')) continue;
          const r = await this.readRecord(owner, f.slice(0, -'.json'.length));
          if (r) records.push(r);
        }
        records.sort((a, b) => rank(b.spec.name) - rank(a.spec.name));
        const out: ComponentStatus[] = [];
        for (const r of records) {
          out.push(await this.ensure(r.spec));
          await this.waitReady(owner, r.spec.name, readinessTimeoutMs).catch((e: unknown) =>
            this.opts.logger.warn('resumed component not ready; the supervisor keeps trying', {
              owner,
              component: r.spec.name,
              error: (e as Error).message,
            }),
          );
        }
        return out;
      }),
    );
    return perOwner.flat();
  }

  /** Stops every process, clients before servers, but keeps the records for resume(). */
  async shutdown(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.logTimer);
    const byOwner = new Map<string, Supervised[]>();
    for (const s of this.procs.values())
      byOwner.set(s.record.spec.owner, [...(byOwner.get(s.record.spec.owner) ?? []), s]);
    await Promise.all(
      [...byOwner.values()].map(async (list) => {
        list.sort((a, b) => rank(a.record.spec.name) - rank(b.record.spec.name));
        for (const s of list) await this.stopSupervised(s);
      }),
    );
    this.procs.clear();
  }

  /** Stops supervising without stopping anything: what a crashed worker leaves behind. */
  detach(): void {
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.logTimer);
    this.procs.clear();
  }

  /** The last `lines` of a component's log, from at most its last `maxBytes`. */
  logTail(owner: string, name: ComponentName, lines = 20, maxBytes = 16 * 1024): Promise<string> {
    return logTail(this.logPath(owner, name), lines, maxBytes);
  }
}
