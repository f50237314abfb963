/**
 * The smoke run `npm test` makes (test/integration/bench.test.ts): one tenant's memory and get ns
 * (density), and 100 pods through its clusterTree next to the same on the host (fair sync), in
 * one environment, so the benchmark harness keeps working.
 */
import { density } from './density.js';
import { fairSync } from './fairsync.js';
import type { Scenario } from './scenario.js';

export const smoke: Scenario = {
  summary: 'one tenant, 100 pods: the harness works (npm test runs it)',
  quick: { pods: 100 },
  full: { pods: 100 },
  async run(ctx, o) {
    const d = await density.run(ctx, { tenants: 1, settle: 2, requests: 10 });
    const f = await fairSync.run(ctx, { tenants: 1, pods: o.pods!, noisy: 0, quiet: 0 });
    return { lines: [...d.lines, '', ...f.lines], json: { density: d.json, fairSync: f.json } };
  },
};
