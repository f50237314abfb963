/**
 * clusterTree's Prometheus metrics (prom-client), one set per tenant, every series labelled with
 * the tenant: how long each sync takes by kind of object and outcome, the work queue's depth,
 * what it mirrors, node heartbeats; and the process's own figures (a shared process's once,
 * labelled `process="shared"`). Served on `/metrics` of the tenant's status port
 * (src/clustertree/serve.ts).
 */
import { hostname } from 'node:os';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import type { ClusterTreeStats } from '../clustertree/controller.js';

const SYNC_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ClusterTreeMetrics {
  readonly registry = new Registry();
  private readonly syncDuration = new Histogram({
    name: 'kosmos_vc_clustertree_sync_duration_seconds',
    help: 'Duration of one sync of one object (pod, node, service, ...) by kind and outcome',
    labelNames: ['kind', 'outcome'] as const,
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });

  /**
   * `processRegistry`: the process's own figures, kept once for every tenant of a shared process
   * (sharedProcessMetrics); each tenant's then serves them beside its own. Without, this registry
   * collects them (a process of its own). Collecting them per tenant in a shared process would
   * leave an event-loop monitor and a GC observer behind for every tenant that ever came and went.
   */
  constructor(
    tenant: Pick<VirtualClusterRef, 'namespace' | 'name'>,
    read: () => ClusterTreeStats,
    private readonly processRegistry?: Registry,
  ) {
    // One reading per scrape (the series below are collected one after another).
    let cached: { at: number; stats: ClusterTreeStats } | undefined;
    const stats = (): ClusterTreeStats => {
      const now = performance.now();
      if (!cached || now - cached.at > 100) cached = { at: now, stats: read() };
      return cached.stats;
    };
    this.registry.setDefaultLabels({ tenant: `${tenant.namespace}/${tenant.name}` });
    if (!processRegistry)
      collectDefaultMetrics({ register: this.registry, prefix: 'kosmos_vc_clustertree_' });
    const gauge = (name: string, help: string, value: (s: ClusterTreeStats) => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(value(stats()));
        },
      });
    gauge(
      'kosmos_vc_clustertree_queue_depth',
      'Keys waiting, being synced or backing off',
      (s) => s.queueDepth,
    );
    gauge('kosmos_vc_clustertree_ready', '1 once every watched list has been read', (s) => (s.ready ? 1 : 0));
    gauge('kosmos_vc_clustertree_tenant_nodes', 'Nodes clusterTree keeps in the tenant', (s) => s.nodes);
    gauge('kosmos_vc_clustertree_tenant_pods', 'Tenant pods bound to those nodes', (s) => s.pods);
    gauge('kosmos_vc_clustertree_host_pods', 'Host pods of the tenant', (s) => s.hostPods);
    // Counters kept by the controller, reported as they grow.
    const counter = (name: string, help: string, value: (s: ClusterTreeStats) => number) => {
      let seen = 0;
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          const now = value(stats());
          if (now > seen) this.inc(now - seen);
          seen = Math.max(seen, now);
        },
      });
    };
    counter('kosmos_vc_clustertree_heartbeats_total', 'Node lease renewals', (s) => s.heartbeats);
    counter(
      'kosmos_vc_clustertree_heartbeat_fallbacks_total',
      'Node lease renewals whose update of the lease they last wrote failed (then patched or made)',
      (s) => s.heartbeatFallbacks,
    );
    counter(
      'kosmos_vc_clustertree_sync_errors_total',
      'Syncs that failed and were retried',
      (s) => s.syncErrors,
    );
  }

  /** What `/metrics` serves: the tenant's series, then the shared process's figures where there is one. */
  async text(): Promise<string> {
    const own = await this.registry.metrics();
    return this.processRegistry ? `${own}\n${await this.processRegistry.metrics()}` : own;
  }

  /** The work queue's hook: one observation per finished sync of `key` ("pod/ns/name"). */
  synced(key: string, seconds: number, ok: boolean): void {
    const kind = key.slice(0, Math.max(0, key.indexOf('/'))) || 'other';
    this.syncDuration.observe({ kind, outcome: ok ? 'success' : 'failure' }, seconds);
  }
}

/**
 * A shared clusterTree process's own figures, collected once, labelled `process="shared"` and
 * with the machine (`worker`): every tenant's endpoint serves them, so a query takes one per worker.
 */
export function sharedProcessMetrics(): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ process: 'shared', worker: hostname() });
  collectDefaultMetrics({ register: registry, prefix: 'kosmos_vc_clustertree_' });
  return registry;
}
