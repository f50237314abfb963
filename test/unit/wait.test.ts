/**
 * The poll activities wait with: a fixed limit, or (for thousands of promoted nodes) a limit
 * without progress.
 */
import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { heartbeating, orCancelled, until } from '../../src/activities/wait.js';

describe('until (a wait inside an activity)', () => {
  it('ends as soon as the check says done', async () => {
    let calls = 0;
    await until('three calls', 1_000, () => Promise.resolve(++calls === 3), 5);
    expect(calls).toBe(3);
  });

  it('pauses between checks as a function of the wait says (quick first, then slower)', async () => {
    const pauses = [5, 5, 100];
    const asked: number[] = [];
    let checks = 0;
    const started = Date.now();
    await until(
      'the fourth check',
      5_000,
      () => Promise.resolve(++checks === 4),
      () => {
        asked.push(checks);
        return pauses.shift()!;
      },
    );
    expect(asked).toEqual([1, 2, 3]);
    // 5 + 5 + 100 ms, not three of the default 300.
    expect(Date.now() - started).toBeGreaterThanOrEqual(105);
    expect(Date.now() - started).toBeLessThan(700);
  });

  it('fails with what it waited for once the time is up', async () => {
    await expect(until('nothing', 50, () => Promise.resolve(false), 5)).rejects.toThrow(
      /^timed out after 0s waiting for nothing$/,
    );
  });

  it('waits past its limit while the count grows, and says how far it got when it stalls', async () => {
    // 100 ms without progress is the limit; the count grows for ~400 ms, then stops.
    const started = Date.now();
    let count = 0;
    let lastGrowth = started;
    const err = await until(
      'the nodes',
      100,
      () => {
        if (Date.now() - started < 400) {
          count++;
          lastGrowth = Date.now();
        }
        return Promise.resolve({ done: false, count, of: 100 });
      },
      5,
    ).catch((e: Error) => e);
    const failedAt = Date.now();
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toBe(
      `timed out after 0s without progress waiting for the nodes: ${count} of 100`,
    );
    // It waited well past its 100 ms while the count grew, and gave up only 100 ms after the last growth.
    expect(lastGrowth - started).toBeGreaterThanOrEqual(300);
    expect(failedAt - lastGrowth).toBeGreaterThanOrEqual(100);
  });

  it('ends when a growing count reaches done, however long that takes', async () => {
    let count = 0;
    await until(
      'the nodes',
      30,
      () => {
        count++;
        return Promise.resolve({ done: count === 60, count, of: 60 });
      },
      5,
    );
    // 60 polls of at least 5 ms each: well past the 30 ms limit.
    expect(count).toBe(60);
  });

  it('ends when a check never answers, saying how far it had got', async () => {
    let calls = 0;
    const started = Date.now();
    const err = await until(
      'the nodes',
      200,
      () =>
        ++calls === 1 ? Promise.resolve({ done: false, count: 3, of: 5 }) : new Promise<never>(() => {}),
      5,
    ).catch((e: Error) => e);
    expect((err as Error).message).toBe('timed out after 0s without progress waiting for the nodes: 3 of 5');
    expect(calls).toBe(2);
    // The hung check had its second (more than the 200 ms limit), not forever.
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('stops waiting for a pending check when the activity is cancelled', async () => {
    const env = new MockActivityEnvironment();
    const started = Date.now();
    const waiting = env.run(() =>
      until('a check that never answers', 60_000, () => new Promise<never>(() => {})),
    );
    setTimeout(() => env.cancel(), 100);
    await expect(waiting).rejects.toBeInstanceOf(CancelledFailure);
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

describe('heartbeating (every activity)', () => {
  it("repeats until's last progress in every heartbeat, instead of an empty one", async () => {
    const env = new MockActivityEnvironment();
    const beats: unknown[] = [];
    env.on('heartbeat', (d: unknown) => beats.push(d));
    let count = 0;
    const activity = heartbeating(
      () =>
        until(
          'the nodes',
          5_000,
          () => {
            // Progress on the first three polls, then none until the end (~600 ms in all).
            if (count < 3) count++;
            return Promise.resolve({ done: Date.now() - started > 600, count, of: 10 });
          },
          150,
        ),
      50,
    );
    const started = Date.now();
    await env.run(activity);
    const afterFirst = beats.slice(beats.indexOf('the nodes: 1 of 10'));
    // The wrapper's own beats (every 50 ms) outnumber until's (every 150 ms), and say the same.
    expect(afterFirst.length).toBeGreaterThan(8);
    expect(beats[0]).toBeUndefined(); // before any progress
    expect(afterFirst.every((d) => typeof d === 'string' && d.startsWith('the nodes: '))).toBe(true);
    expect(afterFirst.at(-1)).toBe('the nodes: 3 of 10');
  });
});

describe('orCancelled', () => {
  it('leaves no unhandled rejection when the wait it gave up on fails later', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      for (const abortFirst of [true, false]) {
        const stop = new AbortController();
        let fail!: (e: Error) => void;
        const later = new Promise<void>((_, reject) => (fail = reject));
        if (abortFirst) stop.abort(new Error('stopped'));
        const waiting = orCancelled(later, stop.signal);
        if (!abortFirst) stop.abort(new Error('stopped'));
        await expect(waiting).rejects.toThrow('stopped');
        fail(new Error('not ready after 60s'));
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
