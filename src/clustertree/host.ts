/**
 * A shared clusterTree process (ADR 12, decision 13): it serves every tenant registered in its
 * directory, one file each (`<owner>.json`, written by the operator's runtime,
 * src/runtime/sharedClusterTree.ts), with the tenant's own configuration file, ports and
 * credentials. A new file starts that tenant's tree, a removed one stops it, a changed one
 * restarts it. The directory is read when it changes and every few seconds (a missed change
 * notification costs that much), and again in full when the process starts: a restarted
 * process brings every registered tenant back.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../worker/logger.js';
import { ClusterTreeConfig } from './config.js';
import { Registration, SERVED_FILE, type ServedState } from './registration.js';
import { FairShare } from './queue.js';
import { sharedProcessMetrics } from '../metrics/clusterTree.js';
import { serveTenant, type ServedTenant, type SharedParts } from './serve.js';

interface Running {
  hash: string;
  served?: ServedTenant | undefined;
  /** A start that failed: tried again from this time on. */
  retryAt?: number;
  backoffMs: number;
  /** Starts of this registration that failed, and why the last did. */
  failures: number;
  lastError?: string | undefined;
  log: Logger;
}

const RESCAN_MS = 2000;
/**
 * Syncs under way at once, all tenants together, granted in turn (FairShare): twice a tenant's
 * own cap (48), so one busy tenant never waits and two busy ones share evenly.
 */
export const SHARED_SYNC_SLOTS = 96;

export class TreeHost {
  private readonly tenants = new Map<string, Running>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> = Promise.resolve();
  private again = false;
  private passing = false;
  private stopped = false;
  /** When the last pass began (ServedState.pass), and how many served states were written. */
  private lastPass = 0;
  private writes = 0;
  private readonly shared: SharedParts;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
    slots = SHARED_SYNC_SLOTS,
  ) {
    this.shared = { share: new FairShare(slots), processMetrics: sharedProcessMetrics() };
  }

  async start(): Promise<void> {
    // What a previous process served says nothing of this one: nothing, until the first pass.
    await this.writeServed();
    // Its own writes (the served state, a dot file) are no change of the registrations.
    this.watcher = watch(this.dir, (_event, file) => {
      if (!file?.startsWith('.')) this.reconcile();
    });
    this.watcher.on('error', (e) =>
      this.log.warn('watching the tenants directory failed', { error: String(e) }),
    );
    this.timer = setInterval(() => this.reconcile(), RESCAN_MS);
    this.reconcile();
    await this.pass;
  }

  /** Every tenant's tree stops, together. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    clearInterval(this.timer);
    await this.pass;
    await Promise.all([...this.tenants.values()].map((t) => t.served?.stop() ?? Promise.resolve()));
    this.tenants.clear();
  }

  /** The tenants served now. */
  owners(): string[] {
    return [...this.tenants.entries()].filter(([, t]) => t.served).map(([o]) => o);
  }

  /** One pass at a time; a change during a pass runs one more after it. */
  private reconcile(): void {
    if (this.stopped) return;
    if (this.passing) {
      this.again = true;
      return;
    }
    this.passing = true;
    this.pass = (async () => {
      do {
        this.again = false;
        await this.reconcileOnce().catch((e: unknown) =>
          this.log.warn('reading the tenants directory failed', { error: String(e) }),
        );
      } while (this.again && !this.stopped);
      this.passing = false;
    })();
  }

  /** The registrations, and the owners whose file could not be read now (kept as they are). */
  private async wanted(): Promise<{ wanted: Map<string, Registration>; unreadable: Set<string> }> {
    const wanted = new Map<string, Registration>();
    const unreadable = new Set<string>();
    for (const f of await readdir(this.dir)) {
      if (!f.endsWith('.json') || f.startsWith('.')) continue;
      try {
        const r = Registration.parse(JSON.parse(await readFile(join(this.dir, f), 'utf8')));
        wanted.set(r.owner, r);
      } catch (e) {
        // Removed meanwhile (ENOENT), or not readable: the runtime writes whole files only.
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        unreadable.add(f.slice(0, -'.json'.length));
        this.log.warn('ignoring an unreadable registration', { file: f, error: String(e) });
      }
    }
    return { wanted, unreadable };
  }

  private async reconcileOnce(): Promise<void> {
    const pass = Date.now();
    const { wanted, unreadable } = await this.wanted();
    const stops: Promise<void>[] = [];
    for (const [owner, t] of this.tenants) {
      const w = wanted.get(owner);
      if (w?.hash === t.hash || unreadable.has(owner)) continue;
      this.tenants.delete(owner);
      t.log.info(w ? 'registration changed; restarting' : 'unregistered; stopping');
      stops.push(t.served?.stop() ?? Promise.resolve());
    }
    // A restarted tenant's ports are free again before its new tree opens them.
    await Promise.all(stops);
    const now = Date.now();
    for (const [owner, r] of wanted) {
      const t = this.tenants.get(owner);
      if (t && (t.served || (t.retryAt ?? 0) > now)) continue;
      await this.startTenant(r, t);
    }
    this.lastPass = pass;
    await this.writeServed();
  }

  /** The served state, for the runtime (ServedState); a failed write is tried at the next pass. */
  private async writeServed(): Promise<void> {
    const state: ServedState = {
      pass: this.lastPass,
      tenants: Object.fromEntries(
        [...this.tenants].map(([owner, t]) => [
          owner,
          {
            hash: t.hash,
            serving: t.served !== undefined,
            failures: t.failures,
            ...(t.lastError ? { error: t.lastError } : {}),
          },
        ]),
      ),
    };
    const file = join(this.dir, SERVED_FILE);
    const tmp = `${file}.${++this.writes}.tmp`; // two writes at once never share one
    try {
      await writeFile(tmp, JSON.stringify(state));
      await rename(tmp, file);
    } catch (e) {
      this.log.warn('writing the served state failed', { error: String(e) });
    }
  }

  /** Starts a registration's tree; `before`: the entry of its last failed start (its count goes on). */
  private async startTenant(r: Registration, before: Running | undefined): Promise<void> {
    const entry: Running =
      before?.hash === r.hash
        ? before
        : { hash: r.hash, backoffMs: 1000, failures: 0, log: this.log.child({ owner: r.owner }) };
    this.tenants.set(r.owner, entry);
    const failed = (e: unknown) => {
      entry.served = undefined;
      entry.retryAt = Date.now() + entry.backoffMs;
      entry.failures++;
      entry.lastError = e instanceof Error ? e.message : String(e);
      entry.log.error('clusterTree could not start; trying again', {
        error: entry.lastError,
        inMs: entry.backoffMs,
      });
      entry.backoffMs = Math.min(entry.backoffMs * 2, 30_000);
    };
    try {
      const cfg = ClusterTreeConfig.parse(JSON.parse(await readFile(r.config, 'utf8')));
      const log = entry.log.child({
        component: 'clustertree',
        vc: `${cfg.tenant.namespace}/${cfg.tenant.name}`,
      });
      const served = await serveTenant(cfg, log, this.shared);
      entry.served = served;
      // Serving: earlier failures of this registration say nothing of it any more.
      entry.failures = 0;
      entry.lastError = undefined;
      served.started.then(
        () => (entry.backoffMs = 1000),
        (e: unknown) => {
          if (this.tenants.get(r.owner) !== entry) return;
          void served.stop().finally(() => {
            failed(e);
            void this.writeServed();
          });
        },
      );
    } catch (e) {
      failed(e);
    }
  }
}
