/**
 * Waiting inside an activity: a poll that heartbeats (so Temporal tells a dead worker from a
 * long wait) and ends early when the activity is cancelled, and the heartbeat every activity
 * sends while it runs.
 */
import { Context } from '@temporalio/activity';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * `p`, or the activity's cancellation (CancelledFailure, the signal's reason) if that comes
 * first. The listener goes when `p` settles: a long wait holds nothing per check it made.
 */
export function orCancelled<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => undefined); // its later failure is nobody's now: never an unhandled rejection
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Sleeps `ms`, or rejects with the activity's cancellation as soon as it is cancelled. */
async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch (e) {
    throw signal?.aborted ? (signal.reason as Error) : e;
  }
}

/** The running activity's context; undefined outside an activity (tests). */
export function currentContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // outside an activity
  }
}

/** What an activity last said about its progress: every heartbeat of it carries this. */
const progressOf = new WeakMap<Context, string>();

/**
 * Says how far the current activity has come: heartbeats now, and every heartbeat of the
 * activity's wrapper repeats it (`undefined` clears it). A no-op outside an activity.
 */
export function reportProgress(detail: string | undefined): void {
  const ctx = currentContext();
  if (!ctx) return;
  if (detail === undefined) progressOf.delete(ctx);
  else {
    progressOf.set(ctx, detail);
    ctx.heartbeat(detail);
  }
}

/**
 * Heartbeats every `everyMs` while `fn` runs, so that when a worker dies its step is retried on
 * another worker after the heartbeat timeout instead of the much longer start-to-close timeout.
 * Each heartbeat repeats the progress `until` last reported (Temporal keeps the last details
 * only: the Web UI shows "the nodes: 1200 of 5000", not an empty heartbeat).
 */
export function heartbeating<A extends unknown[], R>(
  fn: (...args: A) => Promise<R>,
  everyMs = 2_000,
): (...args: A) => Promise<R> {
  return async (...args: A) => {
    const ctx = currentContext();
    if (!ctx) return fn(...args); // called outside an activity (tests)
    ctx.heartbeat();
    const timer = setInterval(() => ctx.heartbeat(progressOf.get(ctx)), everyMs);
    try {
      return await fn(...args);
    } finally {
      clearInterval(timer);
    }
  };
}

/** How far a long wait has come: `done`, or `count` things of the `of` it waits for. */
export interface Progress {
  done: boolean;
  count: number;
  of: number;
}

/**
 * Polls `check` until it says done. A check that returns Progress waits as long as the count
 * grows: the limit is `timeoutMs` without progress, not in all; the error says how far it got.
 * A check still unanswered when the time is up (a request that never returns) ends the wait
 * too: it is left to settle on its own.
 */
export async function until(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean | Progress>,
  /** The pause between checks, or a function that says each (e.g. `readinessPauses`). */
  intervalMs: number | (() => number) = 300,
): Promise<void> {
  let deadline = Date.now() + timeoutMs;
  let best = -1;
  let last: Progress | undefined;
  const fail = (detail: string) =>
    new Error(
      `timed out after ${Math.round(timeoutMs / 1000)}s${last ? ' without progress' : ''} waiting for ${detail}`,
    );
  const signal = currentContext()?.cancellationSignal;
  try {
    await poll();
  } finally {
    reportProgress(undefined);
  }

  async function poll(): Promise<void> {
    for (;;) {
      // Every check has at least a second, also one started just before the deadline; a
      // cancelled activity stops waiting for it (with its CancelledFailure).
      const checked = check();
      const got = await answerBy(orCancelled(checked, signal), Math.max(deadline, Date.now() + 1_000));
      if (got === TIMED_OUT) throw fail(last ? `${what}: ${last.count} of ${last.of}` : what);
      if (got === true || (typeof got === 'object' && got.done)) return;
      let detail = what;
      if (typeof got === 'object') {
        last = got;
        if (got.count > best) {
          best = got.count;
          deadline = Date.now() + timeoutMs;
        }
        detail = `${what}: ${got.count} of ${got.of}`;
      }
      if (Date.now() > deadline) throw fail(detail);
      reportProgress(detail);
      // Ends early when the activity is cancelled (worker shutdown, workflow).
      await pause(typeof intervalMs === 'function' ? intervalMs() : intervalMs, signal);
    }
  }
}

const TIMED_OUT = Symbol('timed out');

/** `p`'s value, or TIMED_OUT once `deadline` (ms since the epoch) has passed first. */
async function answerBy<T>(p: Promise<T>, deadline: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), Math.max(0, deadline - Date.now()));
  });
  // A check that fails after the wait ended is nobody's error.
  p.catch(() => undefined);
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Both at once; once neither runs any more (nothing is left working behind a failed step), the first one's failure, else the second's. */
export async function both<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === 'rejected') throw ra.reason;
  if (rb.status === 'rejected') throw rb.reason;
  return [ra.value, rb.value];
}
