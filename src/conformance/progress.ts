/**
 * Follows the e2e suite's verbose Ginkgo output line by line and reports each finished spec.
 *
 * Ginkgo (v2, `-v`, no colour) prints a separator, the spec's full text and its location, the
 * spec's own output, then one result line: `• [3.2 seconds]` (passed), `• [FAILED] [3.2 seconds]`
 * (and PANICKED, TIMEDOUT, INTERRUPTED, ABORTED), `S [SKIPPED] [0.1 seconds]`. Specs the focus
 * left out are a run of `S` characters and are not reported. A parallel run (the ginkgo CLI)
 * prints the same block for each spec once it ends.
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
  private afterSeparator = false;

  constructor(private readonly onSpec: (e: SpecEvent, tally: Tally) => void) {}

  line(raw: string): void {
    // Parallel output prefixes nothing; strip a carriage return and leading indentation only.
    const line = raw.replace(/\r$/, '');
    const will = WILL_RUN.exec(line);
    if (will) {
      this.tally.total = Number(will[1]);
      return;
    }
    if (SEPARATOR.test(line)) {
      this.afterSeparator = true;
      this.name = undefined;
      return;
    }
    if (this.afterSeparator) {
      this.afterSeparator = false;
      // Suite nodes ([SynchronizedBeforeSuite], [ReportAfterSuite], ...) are not specs.
      if (!line.startsWith('[') || /^\[sig-[^\]]+\]/.test(line)) this.name = line.trim();
      if (/^\[(Report|Synchronized|Before|After)\w*Suite\]/.test(line)) this.name = undefined;
      return;
    }
    const result = RESULT.exec(line);
    if (!result || this.name === undefined) return;
    const [, mark, status, seconds] = result;
    const state: SpecState =
      mark === 'S' || status === 'SKIPPED' ? 'skipped' : status === undefined ? 'passed' : 'failed';
    this.tally[state]++;
    if (state === 'failed') this.tally.failures.push(this.name);
    this.onSpec({ name: this.name, state, seconds: Number(seconds) }, this.tally);
    this.name = undefined;
  }
}
