/**
 * Burst (issue 10, target 4): --tenants VirtualClusters applied at once, each promoting a kwok
 * node of its own; every one's apply -> Ready, tenants per minute and the slowest.
 * Baseline, same run: one tenant applied alone, apply -> Ready, after a first tenant has warmed
 * the worker up (as every tenant of the burst finds it).
 */
import { createKwokNodes, createVC, deleteVC, percentile, readyVC, say, writePlot } from './common.js';
import { ratio, type Scenario } from './scenario.js';

const TARGET_PER_MINUTE = 15;

export const burst: Scenario = {
  summary: 'tenants applied at once: tenants per minute, the slowest apply -> Ready, vs one alone',
  quick: { tenants: 4 },
  full: { tenants: 20 },
  async run({ env, out }, o) {
    const host = env.operator.host;
    const names = Array.from({ length: o.tenants! }, (_, i) => `b-${i}`);
    await createKwokNodes(host.core, ['b-warm', 'b-solo', ...names], 110);

    say('one tenant alone (after another that warms the worker up)...');
    await createVC(host, 'b-warm', { promoteResources: { nodes: ['b-warm'] } });
    await readyVC(host, 'b-warm');
    await deleteVC(host, 'b-warm');
    const s0 = performance.now();
    await createVC(host, 'b-solo', { promoteResources: { nodes: ['b-solo'] } });
    await readyVC(host, 'b-solo');
    const soloMs = performance.now() - s0;
    await deleteVC(host, 'b-solo');

    say(`${names.length} tenants at once...`);
    const t0 = performance.now();
    const times = await Promise.all(
      names.map(async (name) => {
        await createVC(host, name, { promoteResources: { nodes: [name] } });
        await readyVC(host, name);
        return { name, ms: performance.now() - t0 };
      }),
    );
    const ms = times.map((t) => t.ms);
    const slowest = Math.max(...ms);
    const perMinute = names.length / (slowest / 60_000);
    const plot = await writePlot(out, 'burst', {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: `${names.length} VirtualClusters applied at once: apply -> Ready (s)`,
      width: 480,
      height: 220,
      data: { values: [...times].sort((a, b) => a.ms - b.ms).map((t, i) => ({ i: i + 1, s: t.ms / 1000 })) },
      layer: [
        {
          mark: 'bar',
          encoding: {
            x: { field: 'i', type: 'ordinal', title: 'tenants, in the order they became Ready' },
            y: { field: 's', type: 'quantitative', title: 'seconds' },
          },
        },
        { mark: { type: 'rule', color: 'red' }, encoding: { y: { datum: soloMs / 1000 } } },
      ],
    });
    return {
      lines: [
        `burst: ${names.length} VirtualClusters applied at once (s)`,
        `  baseline, one alone: ${(soloMs / 1000).toFixed(1)}`,
        `  median ${(percentile(ms, 50) / 1000).toFixed(1)}, slowest ${(slowest / 1000).toFixed(1)} (${ratio(slowest, soloMs)} one alone)`,
        `  ${perMinute.toFixed(1)} tenants per minute; target ≥ ${TARGET_PER_MINUTE}: ${perMinute >= TARGET_PER_MINUTE ? 'met' : 'missed'}`,
        `  plot: ${plot}`,
      ],
      json: { soloMs, readyMs: ms, slowestMs: slowest, tenantsPerMinute: perMinute },
    };
  },
};
