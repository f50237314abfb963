/** What every benchmark scenario of `npm run bench -- <scenario>` is (bench/main.ts runs them). */
import type { LocalEnvironment } from '../src/worker/localEnvironment.js';

export interface BenchContext {
  env: LocalEnvironment;
  /** Where plots (SVG) and the JSON result go. */
  out: string;
  /**
   * The worker runs a tenant's API server, controller-manager and scheduler as one process
   * (KOSMOS_VC_ONE_PROCESS, by default; ADR 12, decisions 16 and 21): a floor of the same
   * components is that shape too.
   */
  oneProcess: boolean;
}

export interface BenchResult {
  /** The report, for people: the baseline, the figure and their ratio on each line that has one. */
  lines: string[];
  /** The same figures, for machines (one JSON line on stdout, and <out>/<scenario>.json). */
  json: Record<string, unknown>;
}

export interface Scenario {
  summary: string;
  /** Quick sizes, the default; each can be set by a flag (`--tenants 30`). */
  quick: Record<string, number>;
  /** The sizes the issue asks for (`--full`). */
  full: Record<string, number>;
  /** Runs pods on the embedded host's real node (containerd, kubelet); kwok nodes alone otherwise. */
  realNode?: boolean;
  /** Sizes that may be 0 (a part of the scenario left out); every other one is at least 1. */
  mayBeZero?: readonly string[];
  /** The worker keeps this many control planes started ahead (a warm pool, ADR 12 decision 15). */
  warmPool?: number;
  run(ctx: BenchContext, o: Record<string, number>): Promise<BenchResult>;
}

export const ratio = (figure: number, baseline: number): string =>
  baseline > 0 ? `${(figure / baseline).toFixed(2)}×` : 'n/a';
