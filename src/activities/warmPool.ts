/**
 * A warm pool of control planes (issue 10's moonshot; ADR 12, decision 15): slots whose etcd,
 * API server, controller-manager and scheduler a worker starts ahead, each under an id of its own
 * with its own CAs and an empty etcd, so that a new tenant's `allocate` hands it one that already
 * serves. A slot is used once: the tenant keeps it until its release removes it, and the pool
 * makes a new one.
 *
 * On disk, under the state directory:
 *   pool/<id>.json                    a ready slot's ticket (its allocation);
 *   pool/.claim-<ms>-<nonce>-<id>.json  a ticket being claimed since <ms> (taken out of the pool);
 *   pool/.retire-<nonce>-<id>.json    a ticket being removed (its slot is discarded, whatever happens);
 *   pool/filler.lock                  the filling worker's lease (its token; touched every 10 s);
 *   pool/takeover/                    held while a worker takes over a stale lease;
 *   pool/.<name>.tmp                  a ticket or lock being written;
 *   tenants/<id>/                     the slot's files, as a tenant's (its allocation.json too);
 *   tenants/<tenant>/allocation.json  a claimed slot's ticket.
 * A claim takes a ticket with one rename (two claims of one ticket cannot both succeed), then
 * links it to the tenant's allocation (which fails if the tenant has one: the ticket goes back).
 */
import { randomBytes } from 'node:crypto';
import {
  link,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import type { Logger } from '../worker/logger.js';
import type { TenantAllocation } from './types.js';

export const POOL_PREFIX = 'pool-';
const ALLOCATION_FILE = 'allocation.json';
const LOCK_FILE = 'filler.lock';
const CLAIM_PREFIX = '.claim-';
const CLAIM_NAME = /^\.claim-([0-9]+)-[0-9a-f]+-(pool-[0-9a-f]+)\.json$/;
const RETIRE_NAME = /^\.retire-[0-9a-f]+-(pool-[0-9a-f]+)\.json$/;
const TAKEOVER_DIR = 'takeover';
/** A filler's lease lasts this long untouched (by default); a claim older than it stopped. */
const LEASE_MS = 60_000;

const code = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;
/** A directory's entries; none when it does not exist (any other error is thrown). */
const entries = (dir: string): Promise<string[]> =>
  readdir(dir).catch((e: unknown) => {
    if (code(e) === 'ENOENT') return [];
    throw e;
  });

const ignoreGone = (e: unknown): void => {
  if (code(e) !== 'ENOENT') throw e;
};
const ignoreGoneFalse = (e: unknown): false => {
  ignoreGone(e);
  return false;
};
const parsed = (text: string): TenantAllocation | undefined => {
  try {
    return JSON.parse(text) as TenantAllocation;
  } catch {
    return undefined;
  }
};

export interface WarmPoolDeps {
  /** Ready slots to keep (0: none; the slots an earlier run left are removed). */
  size: number;
  /** The service range slots are made for; a tenant asking for another provisions as without a pool. */
  serviceCIDR: string;
  /** <stateDir>/pool and <stateDir>/tenants. */
  poolDir: string;
  tenantsDir: string;
  /** Allocates `id` on this machine (its directory, ports and allocation.json) and starts its control plane, ready. */
  make: (id: string, serviceCIDR: string, signal: AbortSignal) => Promise<TenantAllocation>;
  /** Removes whatever of `id` exists: its processes, its ports, its directory. */
  discard: (id: string) => Promise<void>;
  logger: Logger;
  /** After a claim, how long the pool waits before making a new slot (the claimed tenant's start goes first). */
  refillDelayMs?: number;
  /** After a slot failed to start, how long before the next try (doubling up to 5 minutes). */
  retryDelayMs?: number;
  /** A ready slot older than this is replaced (its leaf certificates date from its making). */
  maxAgeMs?: number;
  /** How often a full pool looks for claims by other workers and slots to replace. */
  checkMs?: number;
  /** How long a filler's lease lasts untouched (it touches it every sixth of that). */
  leaseMs?: number;
}

export class WarmPool {
  /** Aborted by stop(); each term of holding the lease has its own controller below it. */
  private readonly stopping = new AbortController();
  private readonly token = `${process.pid} ${randomBytes(8).toString('hex')}`;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private lastClaimAt = 0;
  /** The current term's: aborted when the lease turns out to be another worker's. */
  private lost: AbortController | undefined;

  constructor(private readonly deps: WarmPoolDeps) {}

  /** Whether new tenants are handed slots (a size of 0 only cleans up). */
  get enabled(): boolean {
    return this.deps.size > 0;
  }

  private get leaseMs(): number {
    return this.deps.leaseMs ?? LEASE_MS;
  }

  private ticket(id: string): string {
    return join(this.deps.poolDir, `${id}.json`);
  }

  /** The ids of the ready slots (in the order of their names: any order serves). */
  async tickets(): Promise<string[]> {
    return (await entries(this.deps.poolDir))
      .filter((n) => n.startsWith(POOL_PREFIX) && n.endsWith('.json'))
      .map((n) => n.slice(0, -'.json'.length))
      .sort();
  }

  /**
   * Takes a ready slot's ticket out of the pool; undefined when another claim took it first. The
   * name carries the time it was taken (a rename keeps the file's own time, the slot's making).
   */
  private async take(id: string): Promise<string | undefined> {
    const taken = join(
      this.deps.poolDir,
      `${CLAIM_PREFIX}${Date.now()}-${randomBytes(6).toString('hex')}-${id}.json`,
    );
    try {
      await rename(this.ticket(id), taken);
      return taken;
    } catch (e) {
      if (code(e) === 'ENOENT') return undefined;
      throw e;
    }
  }

  /**
   * Hands the tenant whose allocation belongs at `target` a ready slot. Undefined: no slot for
   * this service range, or none ready. A tenant that has an allocation there already (another
   * worker's attempt) gets that one, and the slot goes back to the pool.
   */
  async claim(serviceCIDR: string, target: string): Promise<TenantAllocation | undefined> {
    if (!this.enabled || serviceCIDR !== this.deps.serviceCIDR) return undefined;
    for (const id of await this.tickets()) {
      const taken = await this.take(id);
      if (!taken) continue;
      try {
        await link(taken, target);
      } catch (e) {
        // A filler's start put a claim older than a lease back (this one stalled that long).
        if (
          !(await stat(taken).then(
            () => true,
            () => false,
          ))
        )
          continue;
        await rename(taken, this.ticket(id)).catch(ignoreGone);
        if (code(e) === 'EEXIST') return JSON.parse(await readFile(target, 'utf8')) as TenantAllocation;
        if (code(e) === 'ENOENT') throw e; // the tenant's directory is gone (released meanwhile)
        // A file system without hard links: no slot can be handed out here.
        this.deps.logger.warn('a warm-pool slot cannot be claimed here; provisioning as without a pool', {
          error: (e as Error).message,
        });
        return undefined;
      }
      await unlink(taken).catch(ignoreGone);
      this.lastClaimAt = Date.now();
      this.wake?.();
      return JSON.parse(await readFile(target, 'utf8')) as TenantAllocation;
    }
    return undefined;
  }

  /**
   * Keeps the pool full from now on (after removing what an earlier run left), while this worker
   * holds the filler's lease; another worker's lease is tried again every 30 s. Never throws: a
   * pool that cannot be kept is said in the log, and tenants provision as without one.
   */
  async start(): Promise<void> {
    if (!this.enabled && !(await this.leftovers().catch(() => true))) return;
    this.loop = this.run();
    // With no pool asked for, the start is the clean-up alone: done before the worker goes on.
    if (!this.enabled) await this.loop;
  }

  /** Stops making slots (one being made stops at once). The ready slots stay, as tenants do. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
  }

  /** Whether an earlier run left anything: files in the pool, or slot directories. */
  private async leftovers(): Promise<boolean> {
    return (
      (await entries(this.deps.poolDir)).length > 0 ||
      (await entries(this.deps.tenantsDir)).some((d) => d.startsWith(POOL_PREFIX))
    );
  }

  private async run(): Promise<void> {
    const stopping = this.stopping.signal;
    while (!stopping.aborted) {
      try {
        await mkdir(this.deps.poolDir, { recursive: true, mode: 0o700 });
        if (!(await this.lock())) {
          if (!this.enabled) {
            this.deps.logger.info('another worker holds the warm pool: its size applies');
            return;
          }
          await this.idle(30_000);
          continue;
        }
        await this.term();
        if (!this.enabled) return;
      } catch (e) {
        // With no pool asked for, one try: the operator's start waits for it.
        this.deps.logger.error(`the warm pool stopped${this.enabled ? '; trying again in a minute' : ''}`, {
          error: (e as Error).message,
        });
        if (!this.enabled) return;
        await this.idle(60_000);
      }
    }
  }

  /** One term of holding the lease: clean up, then fill until stopped or the lease is lost. */
  private async term(): Promise<void> {
    const lost = new AbortController();
    this.lost = lost;
    const signal = AbortSignal.any([this.stopping.signal, lost.signal]);
    const renewal = setInterval(() => void this.renew(lost), this.leaseMs / 6);
    renewal.unref();
    try {
      await this.removeOrphans();
      await this.fill(signal);
    } finally {
      clearInterval(renewal);
      if (await this.holdsLock()) await unlink(join(this.deps.poolDir, LOCK_FILE)).catch(() => undefined);
    }
  }

  private async holdsLock(): Promise<boolean> {
    return (await readFile(join(this.deps.poolDir, LOCK_FILE), 'utf8').catch(() => '')) === this.token;
  }

  /** Takes the filler's lease: made whole beside it and linked in (no reader sees half a token). */
  private async lock(): Promise<boolean> {
    const file = join(this.deps.poolDir, LOCK_FILE);
    const tmp = join(this.deps.poolDir, `.lock-${randomBytes(6).toString('hex')}.tmp`);
    await writeFile(tmp, this.token);
    try {
      try {
        await link(tmp, file);
        return true;
      } catch (e) {
        if (code(e) === 'ENOENT') return false; // a clean-up took the temporary file: later
        if (code(e) !== 'EEXIST') throw e;
      }
      const age = await stat(file).then(
        (s) => Date.now() - s.mtimeMs,
        () => undefined,
      );
      if (age !== undefined && age < this.leaseMs) return false;
      // Its filler stopped touching it (gone, or stuck), or it went meanwhile: taken over by one
      // worker at a time (the directory is the mutex; one left by a crash goes after a lease).
      const mutex = join(this.deps.poolDir, TAKEOVER_DIR);
      try {
        await mkdir(mutex);
      } catch (e) {
        if (code(e) !== 'EEXIST') throw e;
        const held = await stat(mutex).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (held > this.leaseMs) await rm(mutex, { recursive: true, force: true });
        return false;
      }
      try {
        const again = await stat(file).then(
          (s) => Date.now() - s.mtimeMs,
          () => undefined,
        );
        if (again !== undefined && again < this.leaseMs) return false; // another took it first
        if (again !== undefined)
          this.deps.logger.warn('taking over the warm pool from a filler that stopped', {
            idleSeconds: Math.round(again / 1000),
          });
        await unlink(file).catch(ignoreGone);
        await link(tmp, file);
        return true;
      } finally {
        await rm(mutex, { recursive: true, force: true });
      }
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  private async renew(lost: AbortController): Promise<void> {
    if (this.stopping.signal.aborted || lost.signal.aborted) return;
    if (!(await this.holdsLock())) {
      this.deps.logger.warn('another worker took over the warm pool; this one waits for the lease again');
      lost.abort();
      return;
    }
    const now = new Date();
    await utimes(join(this.deps.poolDir, LOCK_FILE), now, now).catch(() => undefined);
  }

  /**
   * Removes slots that are neither ready, being claimed, nor claimed: made halfway by a filler
   * that stopped, or a ticket whose slot is gone. The pool is listed before the claims, so that
   * a claim made in between is seen in the second listing; a file that cannot be read stops the
   * clean-up (a slot is removed only when it is certain nobody has it).
   */
  private async removeOrphans(): Promise<void> {
    if (!(await this.holdsLock())) return;
    const ready = new Set(await this.tickets());
    const inTransit = new Set<string>();
    for (const name of await entries(this.deps.poolDir)) {
      const path = join(this.deps.poolDir, name);
      if (name.startsWith('.') && name.endsWith('.tmp')) {
        // Another worker's lock or ticket being written is younger than a lease.
        const age =
          Date.now() -
          (await stat(path).then(
            (s) => s.mtimeMs,
            () => Date.now(),
          ));
        if (age > this.leaseMs) await rm(path, { force: true });
        continue;
      }
      const retiring = RETIRE_NAME.exec(name);
      if (retiring) {
        // A removal that stopped: finished.
        if (!(await this.holdsLock())) return;
        await this.deps.discard(retiring[1]!);
        await rm(path, { force: true });
        continue;
      }
      const m = CLAIM_NAME.exec(name);
      if (!m) continue;
      const [, since, id] = m as unknown as [string, string, string];
      if (Date.now() - Number(since) < this.leaseMs) {
        inTransit.add(id); // a claim in progress
        continue;
      }
      // A claim that stopped: taken aside first, so that its claimer's late link fails. The new
      // name is a claim of time 0: a clean-up that finds it (this one having stopped) settles it.
      if (!(await this.holdsLock())) return;
      const aside = join(this.deps.poolDir, `${CLAIM_PREFIX}0-${randomBytes(6).toString('hex')}-${id}.json`);
      if (!(await rename(path, aside).then(() => true, ignoreGoneFalse))) continue;
      const links = await stat(aside).then((s) => s.nlink, ignoreGoneFalse);
      if (links === false) continue;
      if (links > 1) {
        await unlink(aside); // it was linked: the tenant's allocation holds the slot
      } else {
        await rename(aside, this.ticket(id)); // it stopped before it linked: back to the pool
        ready.add(id);
      }
    }
    const claimed = new Set<string>();
    const dirs = await entries(this.deps.tenantsDir);
    for (const dir of dirs) {
      let text: string;
      try {
        text = await readFile(join(this.deps.tenantsDir, dir, ALLOCATION_FILE), 'utf8');
      } catch (e) {
        if (code(e) === 'ENOENT' || code(e) === 'ENOTDIR') continue;
        throw e;
      }
      // A file that does not parse is no claim: a claim links a complete ticket.
      const a = parsed(text);
      if (a && a.id !== dir) claimed.add(a.id);
    }
    const slots = dirs.filter((d) => d.startsWith(POOL_PREFIX));
    for (const id of slots) {
      if (ready.has(id) || inTransit.has(id) || claimed.has(id)) continue;
      // Looked at again right before: a ticket that went back to the pool meanwhile stays.
      if ((await this.tickets()).includes(id) || !(await this.holdsLock())) continue;
      this.deps.logger.info('removing a warm-pool slot left half made', { slot: id });
      await this.deps.discard(id);
    }
    for (const id of ready) {
      if (slots.includes(id) || !(await this.holdsLock())) continue;
      this.deps.logger.warn('removing the ticket of a warm-pool slot that is gone', { slot: id });
      await rm(this.ticket(id), { force: true });
    }
  }

  /** Removes ready slots beyond the size, and those too old to hand out (their leaves date from their making). */
  private async retire(): Promise<void> {
    const maxAgeMs = this.deps.maxAgeMs ?? 24 * 3600_000;
    const ids = await this.tickets();
    let keep = ids.length;
    for (const id of ids) {
      const made = await stat(this.ticket(id)).then(
        (s) => s.mtimeMs,
        () => undefined,
      );
      if (made === undefined) {
        keep--; // claimed meanwhile
        continue;
      }
      const why =
        keep > this.deps.size ? 'beyond the pool size' : Date.now() - made > maxAgeMs ? 'too old' : '';
      if (!why || !(await this.holdsLock())) continue;
      // Taken aside under a name every clean-up finishes: the slot is discarded, never handed out.
      const aside = join(this.deps.poolDir, `.retire-${randomBytes(6).toString('hex')}-${id}.json`);
      const taken = await rename(this.ticket(id), aside).then(() => true, ignoreGoneFalse);
      keep--; // taken here, or by a claim meanwhile: not in the pool either way
      if (!taken) continue;
      this.deps.logger.info('removing a warm-pool slot', { slot: id, why });
      await this.deps.discard(id);
      await rm(aside, { force: true });
    }
  }

  /** Waits `ms`, or until a claim wakes it or the pool stops. */
  private async idle(ms: number, signal: AbortSignal = this.stopping.signal): Promise<void> {
    if (signal.aborted) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      this.wake = done;
    });
    this.wake = undefined;
  }

  private async fill(signal: AbortSignal): Promise<void> {
    const refillDelayMs = this.deps.refillDelayMs ?? 5_000;
    const firstRetryMs = this.deps.retryDelayMs ?? 10_000;
    let retryMs = firstRetryMs;
    while (!signal.aborted) {
      let id: string | undefined;
      try {
        await this.retire();
        if (!this.enabled) return;
        const sinceClaim = Date.now() - this.lastClaimAt;
        if (sinceClaim < refillDelayMs) {
          await this.idle(refillDelayMs - sinceClaim, signal);
          continue;
        }
        if ((await this.tickets()).length >= this.deps.size) {
          await this.idle(this.deps.checkMs ?? 5_000, signal);
          continue;
        }
        signal.throwIfAborted();
        id = `${POOL_PREFIX}${randomBytes(4).toString('hex')}`;
        const t0 = performance.now();
        const a = await this.deps.make(id, this.deps.serviceCIDR, signal);
        signal.throwIfAborted();
        if (!(await this.holdsLock())) {
          this.lost?.abort(); // the slot is discarded below, and the lease waited for again
          throw new Error('the lease was taken over');
        }
        // Written whole under another name first: a claim never reads half a ticket.
        const tmp = join(this.deps.poolDir, `.${id}.tmp`);
        await writeFile(tmp, JSON.stringify(a, null, 2));
        await rename(tmp, this.ticket(id));
        // Paused past the lease between the check and the rename: a new holder may have removed
        // the slot. Its ticket is taken back (unless a claim has it already).
        if (
          !(await this.holdsLock()) ||
          !(await stat(a.dir).then(
            () => true,
            () => false,
          ))
        ) {
          this.lost?.abort();
          const back = await this.take(id);
          if (back) {
            await rm(back, { force: true });
            throw new Error('the lease was taken over');
          }
          id = undefined; // claimed: the tenant has it
          return;
        }
        retryMs = firstRetryMs;
        this.deps.logger.info('warm-pool slot ready', {
          slot: id,
          ms: Math.round(performance.now() - t0),
          ready: (await this.tickets()).length,
          size: this.deps.size,
        });
      } catch (e) {
        // Stopped: the next start removes what was made (the runtime may be closing).
        if (this.stopping.signal.aborted) return;
        if (!this.enabled) throw e; // a clean-up alone: said once, by run()
        if (id)
          await this.deps.discard(id).catch((err: unknown) =>
            this.deps.logger.warn('a warm-pool slot that did not start was not removed', {
              slot: id,
              error: (err as Error).message,
            }),
          );
        if (signal.aborted) return; // the lease was lost: the slot being made went with it
        this.deps.logger.warn('the warm pool could not make a slot; trying again later', {
          ...(id ? { slot: id } : {}),
          error: (e as Error).message,
          retryInSeconds: retryMs / 1000,
        });
        // What fails once (missing binaries, no free ports) mostly fails again: up to 5 minutes apart.
        await pause(retryMs, undefined, { signal }).catch(() => undefined);
        retryMs = Math.min(retryMs * 2, 300_000);
      }
    }
  }
}
