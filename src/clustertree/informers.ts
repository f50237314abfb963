/**
 * clusterTree's watched lists (client-node ListWatch caches): each restarted with a backoff when
 * its watch or list fails, and a gate that says when every list that must be complete before
 * anything is synced has been read once (an empty cache would read as "deleted").
 */
import {
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { errorText, isOwnAbort } from '../api/kubeClient.js';
import type { Logger } from '../worker/logger.js';

interface Source {
  cache: ListWatch<KubernetesObject>;
  name: string;
  /** True once a list succeeded: the cache holds everything, not just what events brought. */
  listed: boolean;
  /** Whether syncing waits for its first list (not for what only adds to the tenant's view). */
  gates: boolean;
}

export interface InformerOptions {
  labelSelector?: string;
  fieldSelector?: string;
  /** Whether syncing waits for this list (default true). */
  gates?: boolean;
}

export class Informers {
  private readonly sources: Source[] = [];
  private readonly restartTimers = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly log: Logger) {}

  /** A watched list; every add, update and delete calls `onEvent`. */
  add<T extends KubernetesObject>(
    kc: KubeConfig,
    name: string,
    path: string,
    listFn: () => Promise<KubernetesListObject<never>>,
    onEvent: (o: T) => void,
    opts: InformerOptions = {},
  ): ListWatch<T> {
    const source: Source = { cache: undefined as never, name, listed: false, gates: opts.gates ?? true };
    // The backoff is reset by a list that worked: ListWatch connects before every list, so a
    // list refused for good (say, a Role without the resource) would otherwise retry every second.
    let backoff = 1000;
    const listed = async () => {
      const result = await listFn();
      source.listed = true;
      backoff = 1000;
      return result;
    };
    const cache = new ListWatch<T>(
      path,
      new Watch(kc),
      listed,
      false,
      opts.labelSelector,
      opts.fieldSelector,
    );
    source.cache = cache;
    const handler = (o: T) => onEvent(o);
    cache.on('add', handler);
    cache.on('update', handler);
    cache.on('delete', handler);
    cache.on('error', (err: unknown) => {
      if (this.stopped || isOwnAbort(err)) return;
      this.log.warn('watch failed; restarting', {
        source: name,
        error: errorText(err),
        inMs: backoff,
      });
      clearTimeout(this.restartTimers.get(name));
      this.restartTimers.set(
        name,
        setTimeout(() => void cache.start().catch(() => undefined), backoff),
      );
      backoff = Math.min(backoff * 2, 30_000);
    });
    this.sources.push(source);
    return cache;
  }

  /** Starts every list; resolves once every gating one was read (false: stopped meanwhile). */
  async start(): Promise<boolean> {
    // A failed first list only emits `error` (the restart timer retries it): wait for all.
    await Promise.all(this.sources.map((s) => s.cache.start().catch(() => undefined)));
    const waiting = () => this.sources.filter((s) => s.gates && !s.listed);
    for (let waited = 0; waiting().length > 0; waited += 200) {
      if (this.stopped) return false;
      if (waited % 10_000 === 0 && waited > 0)
        this.log.warn('waiting for the first list', { sources: waiting().map((s) => s.name) });
      await new Promise((r) => setTimeout(r, 200));
    }
    return !this.stopped;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.restartTimers.values()) clearTimeout(t);
    await Promise.all(this.sources.map((s) => s.cache.stop().catch(() => undefined)));
  }
}
