/**
 * Waiting inside an activity: a poll that heartbeats (so Temporal tells a dead worker from a
 * long wait) and ends early when the activity is cancelled.
 */
import { Context } from '@temporalio/activity';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
  intervalMs = 300,
): Promise<void> {
  let deadline = Date.now() + timeoutMs;
  let best = -1;
  let last: Progress | undefined;
  const fail = (detail: string) =>
    new Error(
      `timed out after ${Math.round(timeoutMs / 1000)}s${last ? ' without progress' : ''} waiting for ${detail}`,
    );
  for (;;) {
    // Every check has at least a second, also one started just before the deadline.
    const got = await answerBy(check(), Math.max(deadline, Date.now() + 1_000));
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
    let ctx: Context | undefined;
    try {
      ctx = Context.current();
    } catch {
      // outside an activity
    }
    ctx?.heartbeat(detail);
    // An activity's sleep ends early when the activity is cancelled (worker shutdown, workflow).
    await (ctx ? ctx.sleep(intervalMs) : sleep(intervalMs));
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
