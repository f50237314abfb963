/**
 * The metrics' shape: clusterTree's series from its stats and syncs, the operator's phase gauge,
 * and the Grafana dashboard in deploy/ asking only for series that exist.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ClusterTreeStats } from '../../src/clustertree/controller.js';
import { ClusterTreeMetrics, sharedProcessMetrics } from '../../src/metrics/clusterTree.js';
import { OperatorMetrics } from '../../src/metrics/operator.js';
import { repoRoot } from '../../src/runtime/binaries.js';
import { metricsEndpoint, readOperatorEnv } from '../../src/worker/config.js';

const stats = (over: Partial<ClusterTreeStats> = {}): ClusterTreeStats => ({
  ready: true,
  nodes: 2,
  pods: 5,
  hostPods: 5,
  queueDepth: 3,
  processed: 40,
  syncErrors: 1,
  heartbeats: 12,
  heartbeatFallbacks: 0,
  ...over,
});

describe('metrics', () => {
  it("clusterTree's: syncs by kind and outcome, its stats as gauges, counters that only grow", async () => {
    let now = stats();
    const m = new ClusterTreeMetrics({ namespace: 'team', name: 'vc1' }, () => now);
    m.synced('pod/shop/web-1', 0.02, true);
    m.synced('pod/shop/web-2', 0.03, false);
    m.synced('node/real-node-0', 0.001, true);
    let text = await m.registry.metrics();
    const t = 'tenant="team/vc1"';
    expect(text).toContain(
      `kosmos_vc_clustertree_sync_duration_seconds_count{${t},kind="pod",outcome="success"} 1`,
    );
    expect(text).toContain(
      `kosmos_vc_clustertree_sync_duration_seconds_count{${t},kind="pod",outcome="failure"} 1`,
    );
    expect(text).toContain(
      `kosmos_vc_clustertree_sync_duration_seconds_count{${t},kind="node",outcome="success"} 1`,
    );
    expect(text).toContain(`kosmos_vc_clustertree_queue_depth{${t}} 3`);
    expect(text).toContain(`kosmos_vc_clustertree_tenant_pods{${t}} 5`);
    expect(text).toContain(`kosmos_vc_clustertree_heartbeats_total{${t}} 12`);
    expect(text).toMatch(
      new RegExp(`^kosmos_vc_clustertree_process_resident_memory_bytes\\{${t}\\} \\d+`, 'm'),
    );
    now = stats({ heartbeats: 20, queueDepth: 0 });
    await new Promise((r) => setTimeout(r, 150)); // one reading per scrape: a later scrape reads again
    text = await m.registry.metrics();
    expect(text).toContain(`kosmos_vc_clustertree_heartbeats_total{${t}} 20`);
    expect(text).toContain(`kosmos_vc_clustertree_queue_depth{${t}} 0`);
  });

  it("a shared clusterTree process's tenants: their own series, the process's figures once, unlabelled by tenant", async () => {
    const proc = sharedProcessMetrics();
    const a = new ClusterTreeMetrics({ namespace: 'team', name: 'a' }, () => stats(), proc);
    const b = new ClusterTreeMetrics({ namespace: 'team', name: 'b' }, () => stats({ heartbeats: 3 }), proc);
    expect(await a.registry.metrics()).not.toContain('process_resident_memory_bytes');
    const [ta, tb] = [await a.text(), await b.text()];
    expect(ta).toContain('kosmos_vc_clustertree_heartbeats_total{tenant="team/a"} 12');
    expect(tb).toContain('kosmos_vc_clustertree_heartbeats_total{tenant="team/b"} 3');
    for (const t of [ta, tb]) {
      expect(t).toMatch(
        /^kosmos_vc_clustertree_process_resident_memory_bytes\{process="shared",worker="[^"]+"\} \d+/m,
      );
      expect(t.match(/^kosmos_vc_clustertree_process_resident_memory_bytes/gm)).toHaveLength(1);
    }
  });

  it("the operator's VirtualClusters by phase, every phase present", async () => {
    const m = new OperatorMetrics();
    let phases: (string | undefined)[] = ['Ready', 'Ready', undefined, 'Failed'];
    m.trackPhases(() => Promise.resolve(phases));
    let text = await m.registry.metrics();
    expect(text).toContain('kosmos_vc_virtualclusters{phase="Ready"} 2');
    expect(text).toContain('kosmos_vc_virtualclusters{phase="Pending"} 1');
    expect(text).toContain('kosmos_vc_virtualclusters{phase="Failed"} 1');
    expect(text).toContain('kosmos_vc_virtualclusters{phase="Deleting"} 0');
    phases = [];
    text = await m.registry.metrics();
    expect(text).toContain('kosmos_vc_virtualclusters{phase="Ready"} 0');
  });

  it('reads KOSMOS_VC_METRICS_ADDRESS: the default is tried, an explicit address is required', () => {
    expect(metricsEndpoint(undefined)).toEqual({ host: '127.0.0.1', port: 9464, required: false });
    expect(metricsEndpoint('0.0.0.0:9100')).toEqual({ host: '0.0.0.0', port: 9100, required: true });
    expect(metricsEndpoint(':9100')).toEqual({ host: '', port: 9100, required: true });
    expect(metricsEndpoint('[::1]:9100')).toEqual({ host: '::1', port: 9100, required: true });
    expect(metricsEndpoint('off')).toBeUndefined();
    expect(() => readOperatorEnv({ KOSMOS_VC_METRICS_ADDRESS: 'nine' })).toThrow(/KOSMOS_VC_METRICS_ADDRESS/);
  });

  it('the Grafana dashboard asks only for series the operator and clusterTree export', async () => {
    const operator = new OperatorMetrics();
    operator.trackPhases(() => Promise.resolve([]));
    const tree = new ClusterTreeMetrics({ namespace: 'a', name: 'b' }, () => stats());
    const names = new Set<string>();
    for (const r of [operator.registry, tree.registry])
      for (const metric of await r.getMetricsAsJSON()) {
        names.add(metric.name);
        if (String(metric.type) === 'histogram')
          for (const suffix of ['_bucket', '_count', '_sum']) names.add(metric.name + suffix);
      }
    const dashboard = JSON.parse(
      await readFile(join(repoRoot(), 'deploy', 'grafana', 'kosmos-vc.json'), 'utf8'),
    ) as { panels: { title: string; targets: { expr: string }[] }[] };
    expect(dashboard.panels.length).toBeGreaterThan(5);
    for (const panel of dashboard.panels)
      for (const { expr } of panel.targets) {
        const used = expr.match(/kosmos_vc_[a-z_]+/g) ?? [];
        expect(used.length, panel.title).toBeGreaterThan(0);
        for (const name of used) expect(names, `${panel.title}: ${name}`).toContain(name);
      }
  });
});
