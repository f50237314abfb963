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
 * grows: the limit is `timeoutMs` without progress, not in all; the count shows in the heartbeat.
 */
export async function until(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean | Progress>,
  intervalMs = 300,
): Promise<void> {
  let deadline = Date.now() + timeoutMs;
  let best = -1;
  for (;;) {
    const got = await check();
    if (got === true || (typeof got === 'object' && got.done)) return;
    let detail = what;
    if (typeof got === 'object') {
      if (got.count > best) {
        best = got.count;
        deadline = Date.now() + timeoutMs;
      }
      detail = `${what}: ${got.count} of ${got.of}`;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${Math.round(timeoutMs / 1000)}s${typeof got === 'object' ? ' without progress' : ''} waiting for ${detail}`,
      );
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
