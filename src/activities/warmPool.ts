/**
 * A warm pool of control planes (issue 10's moonshot; ADR 12, decision 15): slots whose etcd,
 * API server, controller-manager and scheduler a worker starts ahead, each under an id of its own
 * with its own CAs and an empty etcd, so that a new tenant's `allocate` hands it one that already
 * serves. A slot is used once: the tenant keeps it until its release removes it, and the pool
 * makes a new one.
 *
 * On disk, under the state directory:
 *   pool/<id>.json                    a ready slot's ticket (its allocation);
 *   pool/.claim-<nonce>-<id>.json     a ticket being claimed (taken out of the pool);
 *   pool/filler.lock                  the filling worker's lease (its token; touched every 10 s);
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
/** A filler's lease lasts this long untouched; it touches it every 10 s. */
const LEASE_MS = 60_000;

const code = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;
/** A directory's entries; none when it does not exist (any other error is thrown). */
const entries = (dir: string): Promise<string[]> =>
  readdir(dir).catch((e: unknown) => {
    if (code(e) === 'ENOENT') return [];
    throw e;
  });

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
}

export class WarmPool {
  private readonly abort = new AbortController();
  private readonly token = `${process.pid} ${randomBytes(8).toString('hex')}`;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private lastClaimAt = 0;
  private leaseTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: WarmPoolDeps) {}

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

  /** Takes a ready slot's ticket out of the pool; undefined when another claim took it first. */
  private async take(id: string): Promise<string | undefined> {
    const taken = join(this.deps.poolDir, `${CLAIM_PREFIX}${randomBytes(6).toString('hex')}-${id}.json`);
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
    if (this.deps.size === 0 || serviceCIDR !== this.deps.serviceCIDR) return undefined;
    for (const id of await this.tickets()) {
      const taken = await this.take(id);
      if (!taken) continue;
      try {
        await link(taken, target);
      } catch (e) {
        await rename(taken, this.ticket(id));
        if (code(e) === 'EEXIST') return JSON.parse(await readFile(target, 'utf8')) as TenantAllocation;
        throw e; // ENOENT: the tenant's directory is gone (released meanwhile)
      }
      await unlink(taken);
      this.lastClaimAt = Date.now();
      this.wake?.();
      return JSON.parse(await readFile(target, 'utf8')) as TenantAllocation;
    }
    return undefined;
  }

  /**
   * Keeps the pool full from now on (after removing what an earlier run left), while this worker
   * holds the filler's lease; another worker's lease is tried again while it runs. Never throws:
   * a pool that cannot be kept is said in the log, and tenants provision as without one.
   */
  async start(): Promise<void> {
    if (this.deps.size === 0 && (await entries(this.deps.poolDir).catch(() => [])).length === 0) return;
    this.loop = this.run();
    // With no pool asked for, the start is the clean-up alone: done before the worker goes on.
    if (this.deps.size === 0) await this.loop;
  }

  /** Stops making slots (one being made stops at once). The ready slots stay, as tenants do. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { signal } = this.abort;
    try {
      await mkdir(this.deps.poolDir, { recursive: true, mode: 0o700 });
      while (!signal.aborted) {
        if (await this.lock()) break;
        if (this.deps.size === 0) return;
        await this.idle(30_000);
      }
      if (signal.aborted) return;
      this.leaseTimer = setInterval(() => void this.renew(), 10_000);
      this.leaseTimer.unref();
      await this.removeOrphans();
      await this.fill();
    } catch (e) {
      this.deps.logger.error('the warm pool stopped; new tenants provision without it', {
        error: (e as Error).message,
      });
    } finally {
      clearInterval(this.leaseTimer);
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
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          await link(tmp, file);
          return true;
        } catch (e) {
          if (code(e) !== 'EEXIST') throw e;
        }
        const age =
          Date.now() -
          (await stat(file)
            .then((s) => s.mtimeMs)
            .catch(() => 0));
        if (age < LEASE_MS) return false;
        // Its filler stopped touching it (gone, or stuck): the lease is taken over.
        this.deps.logger.warn('taking over the warm pool from a filler that stopped', {
          idleSeconds: Math.round(age / 1000),
        });
        await unlink(file).catch(() => undefined);
      }
      return false;
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  private async renew(): Promise<void> {
    if (!(await this.holdsLock())) {
      this.deps.logger.warn('the warm pool lease was taken over by another worker; this one stops filling');
      this.abort.abort();
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
    const ready = new Set(await this.tickets());
    const inTransit = new Set<string>();
    for (const name of await entries(this.deps.poolDir)) {
      const path = join(this.deps.poolDir, name);
      if (name.startsWith('.lock-') || (name.startsWith('.') && name.endsWith('.tmp'))) {
        await rm(path, { force: true });
        continue;
      }
      if (!name.startsWith(CLAIM_PREFIX)) continue;
      const id = name
        .slice(CLAIM_PREFIX.length)
        .replace(/^[0-9a-f]+-/, '')
        .replace(/\.json$/, '');
      const s = await stat(path).catch(() => undefined);
      if (!s) continue;
      if (Date.now() - s.mtimeMs < LEASE_MS) {
        inTransit.add(id); // a claim in progress
      } else if (s.nlink > 1) {
        await unlink(path); // claimed: its link is the tenant's allocation
      } else {
        await rename(path, this.ticket(id)); // a claim that stopped before it linked: back to the pool
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
      const a = JSON.parse(text) as TenantAllocation;
      if (a.id !== dir) claimed.add(a.id);
    }
    const slots = dirs.filter((d) => d.startsWith(POOL_PREFIX));
    for (const id of slots) {
      if (ready.has(id) || inTransit.has(id) || claimed.has(id)) continue;
      // Looked at again right before: a ticket that went back to the pool meanwhile stays.
      if ((await this.tickets()).includes(id)) continue;
      this.deps.logger.info('removing a warm-pool slot left half made', { slot: id });
      await this.deps.discard(id);
    }
    for (const id of ready) {
      if (slots.includes(id)) continue;
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
      if (made === undefined) continue;
      const why =
        keep > this.deps.size ? 'beyond the pool size' : Date.now() - made > maxAgeMs ? 'too old' : '';
      if (!why) continue;
      const taken = await this.take(id);
      if (!taken) continue;
      keep--;
      this.deps.logger.info('removing a warm-pool slot', { slot: id, why });
      await this.deps.discard(id);
      await rm(taken, { force: true });
    }
  }

  /** Waits `ms`, or until a claim wakes it or the pool stops. */
  private async idle(ms: number): Promise<void> {
    const { signal } = this.abort;
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

  private async fill(): Promise<void> {
    const { signal } = this.abort;
    const refillDelayMs = this.deps.refillDelayMs ?? 5_000;
    const firstRetryMs = this.deps.retryDelayMs ?? 10_000;
    let retryMs = firstRetryMs;
    while (!signal.aborted) {
      await this.retire();
      if (this.deps.size === 0) return;
      const sinceClaim = Date.now() - this.lastClaimAt;
      if (sinceClaim < refillDelayMs) {
        await this.idle(refillDelayMs - sinceClaim);
        continue;
      }
      if ((await this.tickets()).length >= this.deps.size) {
        await this.idle(this.deps.checkMs ?? 5_000);
        continue;
      }
      const id = `${POOL_PREFIX}${randomBytes(4).toString('hex')}`;
      const t0 = performance.now();
      try {
        const a = await this.deps.make(id, this.deps.serviceCIDR, signal);
        signal.throwIfAborted();
        // Written whole under another name first: a claim never reads half a ticket.
        const tmp = join(this.deps.poolDir, `.${id}.tmp`);
        await writeFile(tmp, JSON.stringify(a, null, 2));
        await rename(tmp, this.ticket(id));
        retryMs = firstRetryMs;
        this.deps.logger.info('warm-pool slot ready', {
          slot: id,
          ms: Math.round(performance.now() - t0),
          ready: (await this.tickets()).length,
          size: this.deps.size,
        });
      } catch (e) {
        // Stopped halfway: the next start removes what was made (the runtime may be closing).
        if (signal.aborted) return;
        this.deps.logger.warn('a warm-pool slot did not start; trying again later', {
          slot: id,
          error: (e as Error).message,
          retryInSeconds: retryMs / 1000,
        });
        await this.deps.discard(id).catch((err: unknown) =>
          this.deps.logger.warn('a failed warm-pool slot was not removed', {
            slot: id,
            error: (err as Error).message,
          }),
        );
        // What fails once (missing binaries, no free ports) mostly fails again: up to 5 minutes apart.
        await pause(retryMs, undefined, { signal }).catch(() => undefined);
        retryMs = Math.min(retryMs * 2, 300_000);
      }
    }
  }
}
