/**
 * The smoke run `npm test` makes (test/integration/bench.test.ts): one tenant's memory and get ns
 * (density), and 100 pods through two tenants' clusterTree next to the same on the host, then one
 * tenant's 10 pods alone and beside the other's 40 (fair sync), in one environment, so the
 * benchmark harness keeps working.
 */
import { density } from './density.js';
import { fairSync } from './fairsync.js';
import type { Scenario } from './scenario.js';

export const smoke: Scenario = {
  summary: 'a tenant or two, 100 pods: the harness works (npm test runs it)',
  quick: { pods: 100 },
  full: { pods: 100 },
  async run(ctx, o) {
    const d = await density.run(ctx, { tenants: 1, settle: 2, requests: 10 });
    const pods = Math.max(1, Math.round(o.pods! / 2));
    const f = await fairSync.run(ctx, { tenants: 2, pods, noisy: 40, quiet: 10, settle: 30 });
    return { lines: [...d.lines, '', ...f.lines], json: { density: d.json, fairSync: f.json } };
  },
};
