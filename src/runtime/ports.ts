/**
 * Port allocation for local control planes. Ports come from a fixed range below the kernel's
 * ephemeral range (so an outgoing connection never holds a tenant's port when it restarts),
 * are checked bindable, and are recorded per owner in <stateDir>/ports.json under a lock file,
 * so two workers sharing a state directory never hand out the same port.
 */
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export class PortsExhaustedError extends Error {
  override readonly name = 'PortsExhaustedError';
  constructor(readonly range: readonly [number, number]) {
    super(`no free port left in ${range[0]}-${range[1]}`);
  }
}

export function canBind(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** Where components' ports come from, unless a runtime is given another range. */
export const PORT_RANGE: readonly [number, number] = [21000, 31999];

export class PortAllocator {
  constructor(
    private readonly file: string,
    private readonly range: readonly [number, number] = PORT_RANGE,
  ) {}

  private async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const lock = `${this.file}.lock`;
    await mkdir(dirname(this.file), { recursive: true });
    for (let i = 0; ; i++) {
      try {
        const fh = await open(lock, 'wx');
        await fh.close();
        break;
      } catch {
        // A lock older than 30 s belongs to a process that died holding it.
        const age = await stat(lock).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (age > 30_000) await rm(lock, { force: true });
        if (i > 400) throw new Error(`could not lock ${lock}`);
        await sleep(25);
      }
    }
    try {
      return await fn();
    } finally {
      await rm(lock, { force: true });
    }
  }

  private async read(): Promise<Record<string, number[]>> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as Record<string, number[]>;
    } catch {
      return {};
    }
  }

  private async write(table: Record<string, number[]>): Promise<void> {
    await writeFile(`${this.file}.tmp`, JSON.stringify(table, null, 1));
    await rename(`${this.file}.tmp`, this.file);
  }

  /** `count` ports for `owner`; the same ports again when the owner already has them. */
  async allocate(owner: string, count: number): Promise<number[]> {
    return this.withLock(async () => {
      const table = await this.read();
      const mine = table[owner];
      if (mine && mine.length >= count) return mine.slice(0, count);
      const taken = new Set(Object.values(table).flat());
      const out = [...(mine ?? [])];
      const [lo, hi] = this.range;
      const span = hi - lo + 1;
      const startAt = lo + Math.floor(Math.random() * span);
      for (let i = 0; i < span && out.length < count; i++) {
        const port = lo + ((startAt - lo + i) % span);
        if (!taken.has(port) && (await canBind(port))) out.push(port);
      }
      if (out.length < count) throw new PortsExhaustedError(this.range);
      table[owner] = out;
      await this.write(table);
      return out;
    });
  }

  async release(owner: string): Promise<void> {
    await this.withLock(async () => {
      const table = await this.read();
      if (!(owner in table)) return;
      delete table[owner];
      await this.write(table);
    });
  }

  async owned(owner: string): Promise<number[]> {
    return (await this.read())[owner] ?? [];
  }
}
