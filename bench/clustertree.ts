/**
 * clusterTree benchmark (issue 3). In one run, on one machine, under the same kwok:
 *
 *   pod start latency: N pods created directly on the host (host scheduler, kwok nodes) versus
 *     N pods created in a tenant (tenant scheduler, clusterTree, host pods on promoted kwok
 *     nodes, status copied back); per pod from the create call to `Running` seen by a watch.
 *     p50, p99, pods per second, and clusterTree's CPU time and peak RSS during the tenant run.
 *   node promotion: M kwok nodes promoted into one tenant (create the VirtualCluster -> Ready
 *     with all M nodes Ready in the tenant), then clusterTree's steady-state heartbeat cost
 *     (Lease renewals every 60 s, ADR 12 decision 19: a window shorter than that sees zero or one
 *     pass) over a window: CPU %, RSS, lease renewals per second.
 *
 *   npm run bench:clustertree [-- --pods 1000 --nodes 1000 --steady 60]
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GROUP, PLURAL, VERSION, type VirtualCluster } from '../src/api/virtualCluster.js';
import { tenantId } from '../src/activities/index.js';
import { kwokNode } from '../src/runtime/embedded.js';
import { forEachLimited } from '../src/clustertree/queue.js';
import { createLogger } from '../src/worker/logger.js';
import type { Operator } from '../src/worker/operator.js';
import {
  cpuTicks,
  numericOptions,
  createVC,
  percentile,
  podRun,
  readyVC,
  rssMiB,
  say,
  tenantKc,
  waitFor,
} from './common.js';
import { startLocalEnvironment } from '../src/worker/localEnvironment.js';

const {
  pods: PODS,
  nodes: NODES,
  steady: STEADY_S,
} = numericOptions({ pods: 1000, nodes: 1000, steady: 60 });
const PODS_PER_NODE = 250;
const CONCURRENCY = 32;
const logger = createLogger({ level: 'error' });
/** kwok runs any image: nothing is pulled. */
const KWOK_POD = { containers: [{ name: 'c', image: 'bench' }] };

async function createNodes(core: CoreV1Api, names: string[]): Promise<void> {
  const capacity = { cpu: '64', memory: '256Gi', pods: String(PODS_PER_NODE) };
  await forEachLimited(names, CONCURRENCY, (name) => core.createNode({ body: kwokNode(name, { capacity }) }));
}

async function clusterTreePid(operator: Operator, vc: VirtualCluster): Promise<number> {
  const ref = { namespace: 'default', name: vc.metadata.name, uid: vc.metadata.uid };
  const s = (await operator.runtime!.list(tenantId(ref))).find((c) => c.name === 'clustertree');
  if (!s?.pid) throw new Error('clusterTree is not running');
  return s.pid;
}

/** Samples a process's RSS every 250 ms until stopped; returns the peak. */
function peakRss(pid: number): { stop: () => number } {
  let peak = 0;
  const t = setInterval(
    () =>
      void rssMiB(pid).then(
        (m) => (peak = Math.max(peak, m)),
        () => undefined,
      ),
    250,
  );
  return {
    stop: () => {
      clearInterval(t);
      return peak;
    },
  };
}

async function main(): Promise<void> {
  const env = await startLocalEnvironment({
    prefix: 'kvc-bench-ct-',
    taskQueue: 'bench-clustertree',
    logger,
    etcdUnsafeNoFsync: true,
  });
  const { operator, root } = env;
  try {
    const host = operator.host;
    const hostKc = host.kubeConfig;
    const hostCore = host.core;

    // ---- pod start latency ----
    const perSide = Math.ceil(PODS / (PODS_PER_NODE * 0.8));
    const direct = Array.from({ length: perSide }, (_, i) => `direct-${i}`);
    const promoted = Array.from({ length: perSide }, (_, i) => `promoted-${i}`);
    await createNodes(hostCore, [...direct, ...promoted]);
    await createVC(host, 'pods', { promoteResources: { nodes: promoted } });
    const podsVc = await readyVC(host, 'pods');
    const tenant = tenantKc(podsVc);
    await hostCore.createNamespace({ body: { metadata: { name: 'bench-direct' } } });
    await waitFor('the default service account in bench-direct', () =>
      hostCore
        .readNamespacedServiceAccount({ name: 'default', namespace: 'bench-direct' })
        .catch(() => undefined),
    );

    say(`direct: ${PODS} pods on ${perSide} host nodes...`);
    const base = await podRun(hostKc, 'bench-direct', PODS, KWOK_POD, CONCURRENCY);
    const pid = await clusterTreePid(operator, podsVc);
    const cpu0 = await cpuTicks(pid);
    const rss = peakRss(pid);
    say(`through clusterTree: ${PODS} pods on ${perSide} promoted nodes...`);
    const product = await podRun(tenant, 'default', PODS, KWOK_POD, CONCURRENCY);
    const ctCpuS = ((await cpuTicks(pid)) - cpu0) / 100;
    const ctPeak = rss.stop();
    await hostCore.deleteNamespace({ name: 'bench-direct' });
    await host.custom.deleteNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace: 'default',
      name: 'pods',
    });
    await waitFor('pods VirtualCluster gone', async () =>
      (await host.getVirtualCluster({ namespace: 'default', name: 'pods' })) ? undefined : true,
    );

    // ---- promoting many nodes ----
    say(`creating ${NODES} kwok nodes...`);
    const many = Array.from({ length: NODES }, (_, i) => `many-${i}`);
    await createNodes(hostCore, many);
    say(`promoting ${NODES} nodes into one tenant...`);
    const t0 = performance.now();
    await createVC(host, 'nodes', { promoteResources: { nodes: many } });
    const nodesVc = await readyVC(host, 'nodes');
    const promoteMs = performance.now() - t0;
    const tenantNodes = (await tenantKc(nodesVc).makeApiClient(CoreV1Api).listNode()).items.length;
    const treePid = await clusterTreePid(operator, nodesVc);
    say(`steady state for ${STEADY_S} s...`);
    const stats = async () =>
      (await (await fetch(`http://127.0.0.1:${await statusPort(root, nodesVc)}/status`)).json()) as {
        heartbeats: number;
      };
    const hb0 = (await stats()).heartbeats;
    const c0 = await cpuTicks(treePid);
    const rssSteady = peakRss(treePid);
    await new Promise((r) => setTimeout(r, STEADY_S * 1000));
    const steadyCpuS = ((await cpuTicks(treePid)) - c0) / 100;
    const hb1 = (await stats()).heartbeats;
    const steadyPeak = rssSteady.stop();

    const p = (xs: number[], q: number) => percentile(xs, q);
    const lines = [
      '',
      `pod start latency, ${PODS} pods each (ms, create call -> Running seen by a watch)`,
      `                         p50      p99     pods/s`,
      `  direct on the host  ${p(base.latencies, 50).toFixed(0).padStart(6)} ${p(base.latencies, 99).toFixed(0).padStart(8)} ${((PODS / base.wallMs) * 1000).toFixed(1).padStart(9)}`,
      `  through clusterTree ${p(product.latencies, 50).toFixed(0).padStart(6)} ${p(product.latencies, 99).toFixed(0).padStart(8)} ${((PODS / product.wallMs) * 1000).toFixed(1).padStart(9)}`,
      `  ratio clusterTree / direct: p50 ${(p(product.latencies, 50) / p(base.latencies, 50)).toFixed(2)}, p99 ${(p(product.latencies, 99) / p(base.latencies, 99)).toFixed(2)}, throughput ${(base.wallMs / product.wallMs).toFixed(2)}`,
      `  clusterTree during the run: ${ctCpuS.toFixed(1)} CPU s (${((ctCpuS / product.wallMs) * 100000).toFixed(0)}% of a core), peak RSS ${ctPeak.toFixed(0)} MiB`,
      '',
      `promoting ${NODES} kwok nodes into one tenant`,
      `  create -> Ready with ${tenantNodes} tenant nodes: ${(promoteMs / 1000).toFixed(1)} s`,
      `  steady state over ${STEADY_S} s: clusterTree ${((steadyCpuS / STEADY_S) * 100).toFixed(1)}% of a core, peak RSS ${steadyPeak.toFixed(0)} MiB, ${((hb1 - hb0) / STEADY_S).toFixed(1)} lease renewals/s`,
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    process.stdout.write(
      JSON.stringify({
        bench: 'clustertree',
        pods: PODS,
        direct: { p50: p(base.latencies, 50), p99: p(base.latencies, 99), wallMs: base.wallMs },
        clusterTree: { p50: p(product.latencies, 50), p99: p(product.latencies, 99), wallMs: product.wallMs },
        clusterTreeCpuS: ctCpuS,
        clusterTreePeakRssMiB: ctPeak,
        nodes: NODES,
        promoteMs,
        steadyCpuPercent: (steadyCpuS / STEADY_S) * 100,
        steadyPeakRssMiB: steadyPeak,
        leaseRenewalsPerS: (hb1 - hb0) / STEADY_S,
      }) + '\n',
    );
  } finally {
    await env.close();
  }
}

/** The clusterTree status port, from the config the operator wrote for the tenant. */
async function statusPort(root: string, vc: VirtualCluster): Promise<number> {
  const id = tenantId({ namespace: 'default', name: vc.metadata.name, uid: vc.metadata.uid });
  const cfg = JSON.parse(
    await readFile(join(root, 'operator', 'tenants', id, 'clustertree', 'config.json'), 'utf8'),
  ) as { listen: { port: number } };
  return cfg.listen.port;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
