/**
 * Follows the e2e suite's verbose Ginkgo output line by line and reports each finished spec.
 *
 * Ginkgo (v2, `-v`, no colour) prints a separator, the spec's full text and its location, the
 * spec's own output, then one result line: `• [3.2 seconds]` (passed), `• [FAILED] [3.2 seconds]`
 * (and PANICKED, TIMEDOUT, INTERRUPTED, ABORTED), `S [SKIPPED] [0.1 seconds]`. Specs the focus
 * left out are a run of `S` characters and are not reported. A parallel run (the ginkgo CLI)
 * prints each spec's block once it ends, with the result line first: separator, result, text.
 */

export type SpecState = 'passed' | 'failed' | 'skipped';

export interface SpecEvent {
  name: string;
  state: SpecState;
  seconds: number;
}

export interface Tally {
  /** From "Will run N of M specs"; 0 until Ginkgo has printed it. */
  total: number;
  passed: number;
  failed: number;
  skipped: number;
  failures: string[];
}

const SEPARATOR = /^-{20,}$/;
const WILL_RUN = /^Will run (\d+) of (\d+) specs/;
const RESULT = /^(•|S) (?:\[(FAILED|PANICKED|TIMEDOUT|INTERRUPTED|ABORTED|SKIPPED)\] )?\[([\d.]+) seconds\]/;

export class ProgressParser {
  readonly tally: Tally = { total: 0, passed: 0, failed: 0, skipped: 0, failures: [] };
  private name: string | undefined;
  /** A result line read before its spec's name (the parallel layout). */
  private pending: Omit<SpecEvent, 'name'> | undefined;
  private afterSeparator = false;

  constructor(private readonly onSpec: (e: SpecEvent, tally: Tally) => void) {}

  line(raw: string): void {
    const line = raw.replace(/\r$/, '');
    const will = WILL_RUN.exec(line);
    if (will) {
      this.tally.total = Number(will[1]);
      return;
    }
    if (SEPARATOR.test(line)) {
      this.afterSeparator = true;
      this.name = undefined;
      this.pending = undefined;
      return;
    }
    const result = RESULT.exec(line);
    if (this.afterSeparator) {
      this.afterSeparator = false;
      // Parallel runs print each finished spec as result line, name, location.
      if (result) this.pending = resultOf(result);
      else this.name = specName(line);
      return;
    }
    if (this.pending) {
      const name = specName(line);
      if (name !== undefined) this.emit({ name, ...this.pending });
      this.pending = undefined;
      return;
    }
    if (result && this.name !== undefined) {
      this.emit({ name: this.name, ...resultOf(result) });
      this.name = undefined;
    }
  }

  private emit(e: SpecEvent): void {
    this.tally[e.state]++;
    if (e.state === 'failed') this.tally.failures.push(e.name);
    this.onSpec(e, this.tally);
  }
}

function resultOf(r: RegExpExecArray): Omit<SpecEvent, 'name'> {
  const [, mark, status, seconds] = r;
  const state: SpecState =
    mark === 'S' || status === 'SKIPPED' ? 'skipped' : status === undefined ? 'passed' : 'failed';
  return { state, seconds: Number(seconds) };
}

/** A spec's text; undefined for suite nodes ([SynchronizedBeforeSuite], [ReportAfterSuite], ...). */
function specName(line: string): string | undefined {
  if (/^\[(Report|Synchronized|Before|After)\w*Suite\]/.test(line)) return undefined;
  return line.trim() || undefined;
}
