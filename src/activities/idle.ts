/**
 * Idle tenants (docs/adr/0009, spec.autoSleep): when the last request of a user or workload
 * reached a tenant's API server (its audit log), and, while an idle tenant sleeps, a listener on
 * its API server's port that notices the first request. That connection is held, not refused:
 * once the API server is up again (startApiserver, in this process) it is passed on to it, so
 * the request that woke the tenant is answered.
 */
import { open, stat } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../worker/logger.js';
import { currentContext } from './wait.js';

/** The listeners of sleeping tenants in this process, by tenant id. */
const listeners = new Map<string, Server>();
/** Connections that woke a tenant, by tenant id, until its API server takes them. */
const held = new Map<string, { sockets: Socket[]; timer: NodeJS.Timeout }>();
/** How long a held connection waits for the API server before it is closed. */
const HOLD_MS = 120_000;

/** The time of the last request in an audit log (JSON lines); undefined when there is none. */
export async function lastAuditedRequest(file: string): Promise<string | undefined> {
  const size = await stat(file).then(
    (s) => s.size,
    () => 0,
  );
  if (size === 0) return undefined;
  const f = await open(file, 'r');
  try {
    const length = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(length);
    await f.read(buf, 0, length, size - length);
    const lines = buf.toString('utf8').split('\n').filter(Boolean).reverse();
    for (const line of lines) {
      try {
        const e = JSON.parse(line) as { stageTimestamp?: string; requestReceivedTimestamp?: string };
        const at = e.stageTimestamp ?? e.requestReceivedTimestamp;
        if (at) return new Date(at).toISOString();
      } catch {
        /* the first line of the window may be cut */
      }
    }
    return undefined;
  } finally {
    await f.close();
  }
}

/**
 * Listens where the sleeping tenant's API server listened until the first connection, which it
 * holds (see above), and stops listening when the activity is cancelled; its heartbeats are the
 * activity wrapper's (heartbeating in wait.ts).
 */
export async function awaitFirstConnection(o: {
  owner: string;
  host: string;
  port: number;
  logger: Logger;
  /**
   * Called once it listens, with a signal aborted when the wait ends (a connection, a
   * cancellation); awaited before the wait returns, so nothing it writes lands later.
   */
  onListening?: (ended: AbortSignal) => Promise<void>;
}): Promise<{ at: string }> {
  const ctx = currentContext();
  const server: Server = createServer({ pauseOnConnect: true });
  stopListening(o.owner);
  listeners.set(o.owner, server);
  let listened: Promise<void> = Promise.resolve();
  const ended = new AbortController();
  try {
    return await new Promise<{ at: string }>((resolve, reject) => {
      server.once('error', reject);
      server.once('listening', () => {
        // Whoever reports after this wait ends must find this write done.
        listened = (o.onListening?.(ended.signal) ?? Promise.resolve()).catch((e: unknown) => {
          server.close();
          reject(e instanceof Error ? e : new Error(String(e)));
        });
      });
      server.on('connection', (socket: Socket) => {
        holdConnection(o.owner, socket);
        server.close();
        o.logger.info('a request to a sleeping tenant: waking it', { owner: o.owner });
        resolve({ at: new Date().toISOString() });
      });
      ctx?.cancelled.catch((e: unknown) => {
        server.close();
        reject(e instanceof Error ? e : new Error(String(e)));
      });
      server.listen(o.port, o.host);
    });
  } finally {
    server.close();
    if (listeners.get(o.owner) === server) listeners.delete(o.owner);
    ended.abort();
    await listened;
  }
}

/** Closes this process's listener for `owner`, if any: its API server is about to take the port. */
export function stopListening(owner: string): void {
  listeners.get(owner)?.close();
  listeners.delete(owner);
}

function holdConnection(owner: string, socket: Socket): void {
  const entry = held.get(owner) ?? {
    sockets: [],
    timer: setTimeout(() => dropHeld(owner), HOLD_MS),
  };
  entry.sockets.push(socket);
  socket.on('error', () => undefined);
  held.set(owner, entry);
}

function dropHeld(owner: string): void {
  const entry = held.get(owner);
  held.delete(owner);
  if (!entry) return;
  clearTimeout(entry.timer);
  for (const s of entry.sockets) s.destroy();
}

/** Passes the held connections of `owner` on to its API server, now listening at host:port. */
export function releaseHeldConnections(owner: string, host: string, port: number): number {
  const entry = held.get(owner);
  if (!entry) return 0;
  held.delete(owner);
  clearTimeout(entry.timer);
  for (const client of entry.sockets) {
    if (client.destroyed) continue; // gave up while it waited
    const upstream = connect(port, host, () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  }
  return entry.sockets.length;
}
