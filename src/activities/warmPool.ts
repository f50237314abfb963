/**
 * A warm pool of control planes (issue 10's moonshot; ADR 12, decision 15): slots whose etcd,
 * API server, controller-manager and scheduler a worker starts ahead, each under an id of its own
 * with its own CAs and an empty etcd, so that a new tenant's `allocate` hands it one that already
 * serves. A slot is used once: the tenant keeps it until its release removes it, and the pool
 * makes a new one.
 *
 * On disk, under the state directory:
 *   pool/<id>.json                 a ready slot's ticket (its allocation);
 *   tenants/<id>/                  the slot's files, as a tenant's (its allocation.json too);
 *   tenants/<tenant>/allocation.json  a claimed slot's ticket, moved there by the claim.
 * A claim is one rename of a ticket: it takes the slot out of the pool and records it for the
 * tenant at once, and two claims of one ticket cannot both succeed.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import type { Logger } from '../worker/logger.js';
import type { TenantAllocation } from './types.js';

export const POOL_PREFIX = 'pool-';
const ALLOCATION_FILE = 'allocation.json';
const LOCK_FILE = 'filler.lock';

export interface WarmPoolDeps {
  /** Ready slots to keep. */
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
  /** After a slot failed to start, how long before the next try. */
  retryDelayMs?: number;
}

/** The error codes a claim's rename of a ticket another claim took first fails with. */
const TAKEN = new Set(['ENOENT']);

export class WarmPool {
  private readonly abort = new AbortController();
  private readonly token = `${process.pid} ${randomBytes(6).toString('hex')}`;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private lastClaimAt = 0;

  constructor(private readonly deps: WarmPoolDeps) {}

  private ticket(id: string): string {
    return join(this.deps.poolDir, `${id}.json`);
  }

  /** The ids of the ready slots (in the order of their names: any order serves). */
  async tickets(): Promise<string[]> {
    const names = await readdir(this.deps.poolDir).catch(() => [] as string[]);
    return names
      .filter((n) => n.startsWith(POOL_PREFIX) && n.endsWith('.json'))
      .map((n) => n.slice(0, -'.json'.length))
      .sort();
  }

  /**
   * Hands the tenant whose allocation belongs at `target` a ready slot: the ticket moves there
   * (the caller holds the tenant's lock, and found no allocation there). Undefined: no slot for
   * this service range, or none ready.
   */
  async claim(serviceCIDR: string, target: string): Promise<TenantAllocation | undefined> {
    if (serviceCIDR !== this.deps.serviceCIDR) return undefined;
    for (const id of await this.tickets()) {
      try {
        await rename(this.ticket(id), target);
      } catch (e) {
        if (TAKEN.has((e as NodeJS.ErrnoException).code ?? '')) continue;
        throw e;
      }
      this.lastClaimAt = Date.now();
      this.wake?.();
      return JSON.parse(await readFile(target, 'utf8')) as TenantAllocation;
    }
    return undefined;
  }

  /**
   * Starts keeping the pool full, after removing what an earlier run left half made. One worker
   * of a state directory fills it (a lock file); every worker claims from it.
   */
  async start(): Promise<void> {
    await mkdir(this.deps.poolDir, { recursive: true, mode: 0o700 });
    if (!(await this.lock())) {
      this.deps.logger.info('another worker of this state directory fills the warm pool');
      return;
    }
    await this.removeOrphans();
    this.loop = this.fill();
  }

  /** Stops making slots (one being made stops at its next component). The ready slots stay. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    if (this.loop) await unlink(join(this.deps.poolDir, LOCK_FILE)).catch(() => undefined);
  }

  private async lock(): Promise<boolean> {
    const file = join(this.deps.poolDir, LOCK_FILE);
    for (;;) {
      try {
        await writeFile(file, this.token, { flag: 'wx' });
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const holder = await readFile(file, 'utf8').catch(() => '');
      const pid = Number(holder.split(' ')[0]);
      if (holder && pid > 0 && alive(pid)) return false;
      // Its filler is gone: the lock is stale.
      await unlink(file).catch(() => undefined);
    }
  }

  /**
   * Removes slots that are neither ready nor claimed: made halfway by a filler that stopped, or
   * a ticket whose slot is gone. Tickets are listed before the claims, so that a claim made in
   * between is seen in the second listing.
   */
  private async removeOrphans(): Promise<void> {
    const ready = new Set(await this.tickets());
    const claimed = new Set<string>();
    for (const dir of await readdir(this.deps.tenantsDir).catch(() => [] as string[])) {
      const a = await readFile(join(this.deps.tenantsDir, dir, ALLOCATION_FILE), 'utf8').then(
        (t) => JSON.parse(t) as TenantAllocation,
        () => undefined,
      );
      if (a && a.id !== dir) claimed.add(a.id);
    }
    const slots = (await readdir(this.deps.tenantsDir).catch(() => [] as string[])).filter((d) =>
      d.startsWith(POOL_PREFIX),
    );
    for (const id of slots) {
      if (ready.has(id) || claimed.has(id)) continue;
      this.deps.logger.info('removing a warm-pool slot left half made', { slot: id });
      await this.deps.discard(id);
    }
    for (const name of await readdir(this.deps.poolDir)) {
      if (name.startsWith('.') && name.endsWith('.tmp'))
        await rm(join(this.deps.poolDir, name), { force: true });
    }
    for (const id of ready) {
      if (slots.includes(id)) continue;
      this.deps.logger.warn('removing the ticket of a warm-pool slot that is gone', { slot: id });
      await rm(this.ticket(id), { force: true });
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
      const sinceClaim = Date.now() - this.lastClaimAt;
      if (sinceClaim < refillDelayMs) {
        await this.idle(refillDelayMs - sinceClaim);
        continue;
      }
      if ((await this.tickets()).length >= this.deps.size) {
        await this.idle(30_000);
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
