/**
 * A work queue keyed by object, like client-go's: a key waiting is not added twice, a key is
 * never worked on by two workers at once (an event during its sync runs it once more after),
 * and a failed key comes back after a per-key exponential backoff. Nothing polls: workers sleep
 * until a key arrives.
 */
export interface QueueOptions {
  concurrency: number;
  handle: (key: string) => Promise<void>;
  /** Slots shared with the other tenants of a shared process: each sync holds one (FairShare). */
  share?: { share: FairShare; tenant: string };
  /** Start paused: keys are collected but not worked on until resume(). */
  paused?: boolean;
  onError?: (key: string, err: unknown, retryInMs: number) => void;
  /** Every finished sync: how long it took and whether it succeeded (metrics). */
  onDone?: (key: string, seconds: number, ok: boolean) => void;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

export class KeyedQueue {
  private readonly waiting = new Set<string>();
  private readonly order: string[] = [];
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private running = 0;
  private stopped = false;
  private paused: boolean;
  private idleWaiters: (() => void)[] = [];
  private drainWaiters: (() => void)[] = [];
  /** Keys in their handler (past their turn for a shared slot). */
  private syncing = 0;
  processed = 0;

  constructor(private readonly opts: QueueOptions) {
    this.paused = opts.paused ?? false;
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.waiting.has(key)) return;
    this.waiting.add(key);
    this.order.push(key);
    this.pump();
  }

  /** Keys waiting or being worked on. */
  get depth(): number {
    return this.waiting.size + this.active.size + this.timers.size;
  }

  /** Resolves when nothing is waiting, running or backing off. */
  idle(): Promise<void> {
    if (this.depth === 0 || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Takes no more keys; resolves when the syncs under way have ended, or after `graceMs` (one
   * may hang on a request): a stopped tree of a shared process must not write after its stop.
   * A key still waiting for its turn at a shared slot is dropped when the turn comes.
   */
  stop(graceMs = 10_000): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.order.length = 0;
    this.waiting.clear();
    // Whoever waits for the queue to empty (a tree's first pass) waits no more.
    for (const w of this.idleWaiters.splice(0)) w();
    if (this.syncing === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, graceMs);
      t.unref();
      this.drainWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private pump(): void {
    if (this.paused) return;
    while (this.running < this.opts.concurrency && this.order.length > 0) {
      const key = this.order.shift()!;
      this.waiting.delete(key);
      this.active.add(key);
      this.running++;
      void this.work(key);
    }
    if (this.depth === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async work(key: string): Promise<void> {
    const release = this.opts.share ? await this.opts.share.share.acquire(this.opts.share.tenant) : undefined;
    if (this.stopped) {
      // Stopped while it waited for its turn: the key is not synced.
      release?.();
      this.active.delete(key);
      this.running--;
      return;
    }
    this.syncing++;
    // Timed from its turn: the sync's own duration, not the wait for a slot.
    const started = performance.now();
    let ok = false;
    try {
      await this.opts.handle(key);
      ok = true;
      this.failures.delete(key);
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = Math.min((this.opts.baseDelayMs ?? 500) * 2 ** (n - 1), this.opts.maxDelayMs ?? 30_000);
      this.opts.onError?.(key, err, delay);
      if (!this.stopped) {
        clearTimeout(this.timers.get(key));
        this.timers.set(
          key,
          setTimeout(() => {
            this.timers.delete(key);
            this.add(key);
          }, delay),
        );
      }
    } finally {
      release?.();
      this.syncing--;
      this.processed++;
      this.active.delete(key);
      this.running--;
      if (this.stopped && this.syncing === 0) for (const w of this.drainWaiters.splice(0)) w();
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
      try {
        this.opts.onDone?.(key, (performance.now() - started) / 1000, ok);
      } catch {
        // An observer's failure is not the queue's.
      }
    }
  }
}

/**
 * Slots for syncs, shared by the tenants of one clusterTree process and granted in turn: a tenant
 * with keys waiting gets the next free slot after every other tenant waiting before it has had
 * one, however many keys each has (the fair queue of the Kubernetes VirtualCluster syncer). A
 * tenant scaling to thousands of pods then delays another's next sync by at most one turn, not by
 * its whole backlog. Each tenant's own queue still caps its concurrency; with one tenant, and a
 * limit above that cap, nobody ever waits. A package for this would be larger than it.
 */
export class FairShare {
  private running = 0;
  /** Tenants with syncs waiting, in the order of their turns (a Map keeps insertion order). */
  private readonly waiting = new Map<string, (() => void)[]>();

  constructor(readonly limit: number) {}

  /** Resolves with the slot's release once the tenant's turn has come. */
  async acquire(tenant: string): Promise<() => void> {
    if (this.running < this.limit && this.waiting.size === 0) {
      this.running++;
    } else {
      await new Promise<void>((resolve) => {
        const q = this.waiting.get(tenant);
        if (q) q.push(resolve);
        else this.waiting.set(tenant, [resolve]);
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      this.grant();
    };
  }

  private grant(): void {
    while (this.running < this.limit && this.waiting.size > 0) {
      const [tenant, q] = this.waiting.entries().next().value!;
      const next = q.shift()!;
      // Served: to the back of the line, if it has more.
      this.waiting.delete(tenant);
      if (q.length > 0) this.waiting.set(tenant, q);
      this.running++;
      next();
    }
  }
}

/** Runs `fn` over `items`, at most `limit` at a time; rejects with the first failure. */
export async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
