/**
 * Calls of one key, one at a time, in the order they were made: a chain of promises per key (the
 * process runtime's ensure and stop of a component; the shared clusterTree's calls of a tenant;
 * a tenant's allocation).
 * A package for it would be larger than this.
 */
export class KeyedLocks {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every call of `key` made before it has ended. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    let done!: () => void;
    const mine = before.then(() => new Promise<void>((resolve) => (done = resolve)));
    this.tails.set(key, mine);
    await before;
    try {
      return await fn();
    } finally {
      done();
      if (this.tails.get(key) === mine) this.tails.delete(key);
    }
  }
}
