/**
 * The listener of a sleeping tenant (src/activities/idle.ts): it says so once it listens, and
 * whatever it started then is told to stop when the wait ends, before the wait returns.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { connect, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { awaitFirstConnection, releaseHeldConnections } from '../../src/activities/idle.js';
import { createLogger } from '../../src/worker/logger.js';

const logger = createLogger({ level: 'error' });

/** A free loopback port. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** An onListening that runs until its signal says the wait ended, recording what it saw. */
function slowAnnouncer() {
  const seen = { listening: false, aborted: false };
  const onListening = (ended: AbortSignal) => {
    seen.listening = true;
    return new Promise<void>((resolve) =>
      ended.addEventListener('abort', () => {
        seen.aborted = true;
        resolve();
      }),
    );
  };
  return { seen, onListening };
}

describe('the listener of a sleeping tenant', () => {
  it('stops what it started on listening when a connection ends the wait', async () => {
    const port = await freePort();
    const { seen, onListening } = slowAnnouncer();
    const owner = `idle-test-${port}`;
    const waiting = awaitFirstConnection({ owner, host: '127.0.0.1', port, logger, onListening });
    await expect.poll(() => seen.listening).toBe(true);
    const client = connect(port, '127.0.0.1');
    client.on('error', () => undefined);
    // Resolves only because the connection aborted the announcer's signal.
    await expect(waiting).resolves.toHaveProperty('at');
    expect(seen.aborted).toBe(true);
    client.destroy();
    releaseHeldConnections(owner, '127.0.0.1', port);
  });

  it('stops it when the activity is cancelled', async () => {
    const port = await freePort();
    const { seen, onListening } = slowAnnouncer();
    const env = new MockActivityEnvironment();
    const waiting = env.run(() =>
      awaitFirstConnection({ owner: `idle-test-${port}`, host: '127.0.0.1', port, logger, onListening }),
    );
    await expect.poll(() => seen.listening).toBe(true);
    env.cancel();
    await expect(waiting).rejects.toThrow();
    expect(seen.aborted).toBe(true);
  });
});
