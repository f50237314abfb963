/**
 * Tenants on both runtimes (issue 9's measure, ADR 14): whole VirtualClusters, each promoting a
 * slice of CPU and memory, made by the environment's operator as processes (the baseline) and by
 * a second operator of the same environment as pods on the real node (KOSMOS_VC_RUNTIME=kubernetes),
 * rounds alternating: `kubectl apply` -> Ready, and the memory of all the tenant's components
 * (etcd, API server, controller-manager, scheduler, clusterTree, CoreDNS) after 10 s idle. A pods
 * tenant before the first counted round pulls the images onto the node.
 */
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tenantId } from '../src/activities/index.js';
import { reuseConnections } from '../src/api/kubeClient.js';
import type { VirtualCluster } from '../src/api/virtualCluster.js';
import { hostNamespace } from '../src/clustertree/naming.js';
import { startOperator } from '../src/worker/operator.js';
import {
  createVC,
  deleteVC,
  percentile,
  podMemory,
  readyVC,
  say,
  tenantMemory,
  writePlot,
  type ProcessMemory,
} from './common.js';
import { ratio, type Scenario } from './scenario.js';

const median = (xs: number[]) => percentile(xs, 50);
const RUNTIMES = ['process', 'kubernetes'] as const;
type Runtime = (typeof RUNTIMES)[number];
/** Where the pods operator watches: its tenants apart from the process operator's (`default`). */
const PODS_NAMESPACE = 'pods';
const SPEC = { promoteResources: { resources: { cpu: '1', memory: '1Gi' } } };

export const tenants: Scenario = {
  summary: 'whole tenants as processes vs as pods of the host (apply -> Ready, idle memory per tenant)',
  quick: { rounds: 2 },
  full: { rounds: 5 },
  realNode: true,
  async run({ env, out }, o) {
    const realNode = env.host.realNode;
    if (!realNode || !env.binaries.node) throw new Error('the tenants benchmark needs the real node');
    const kc = reuseConnections(new KubeConfig());
    kc.loadFromFile(env.host.kubeconfigPath);
    const core = kc.makeApiClient(CoreV1Api);
    const host = env.operator.host;
    await core.createNamespace({ body: { metadata: { name: PODS_NAMESPACE } } });
    const pods = await startOperator({
      ...env.operatorOptions,
      applyCRD: false,
      taskQueue: 'bench-tenants-pods',
      stateDir: join(env.root, 'operator-pods'),
      watchNamespace: PODS_NAMESPACE,
      pods: {
        nodeSelector: { 'kubernetes.io/hostname': realNode.name },
        tolerations: [{ operator: 'Exists' }],
      },
    });
    const namespaceOf = (r: Runtime) => (r === 'process' ? 'default' : PODS_NAMESPACE);
    const memoryOf = (r: Runtime, vc: VirtualCluster): Promise<ProcessMemory> => {
      const ref = { namespace: vc.metadata.namespace, name: vc.metadata.name, uid: vc.metadata.uid };
      return r === 'process'
        ? tenantMemory(env.operator, vc)
        : podMemory(core, hostNamespace(ref), tenantId(ref));
    };
    const time: Record<Runtime, number[]> = { process: [], kubernetes: [] };
    const rss: Record<Runtime, number[]> = { process: [], kubernetes: [] };
    const last: Partial<Record<Runtime, ProcessMemory>> = {};
    /** The tenant of the moment: deleted whatever failed, while both operators still run. */
    let current: { name: string; namespace: string } | undefined;
    try {
      say('warm-up: a tenant in pods pulls the images onto the real node...');
      current = { name: 'warmup', namespace: PODS_NAMESPACE };
      await createVC(host, 'warmup', SPEC, PODS_NAMESPACE);
      await readyVC(host, 'warmup', PODS_NAMESPACE);
      await deleteVC(host, 'warmup', PODS_NAMESPACE);
      current = undefined;
      for (let round = 1; round <= o.rounds!; round++) {
        for (const r of RUNTIMES) {
          const name = `${r === 'process' ? 'proc' : 'pods'}-${round}`;
          const t0 = performance.now();
          current = { name, namespace: namespaceOf(r) };
          await createVC(host, name, SPEC, namespaceOf(r));
          const vc = await readyVC(host, name, namespaceOf(r));
          time[r].push(performance.now() - t0);
          await sleep(10_000);
          last[r] = await memoryOf(r, vc);
          rss[r].push(last[r].rss);
          await deleteVC(host, name, namespaceOf(r));
          current = undefined;
        }
        say(
          `round ${round}/${o.rounds}: Ready ${(time.process.at(-1)! / 1000).toFixed(1)} s / ${(time.kubernetes.at(-1)! / 1000).toFixed(1)} s, ` +
            `RSS ${rss.process.at(-1)!.toFixed(0)} / ${rss.kubernetes.at(-1)!.toFixed(0)} MiB (processes / pods)`,
        );
      }
    } finally {
      if (current) await deleteVC(host, current.name, current.namespace).catch(() => undefined);
      await pods.stop({ stopTenants: true });
      await core.deleteNamespace({ name: PODS_NAMESPACE }).catch(() => undefined);
    }
    const t = { process: median(time.process) / 1000, kubernetes: median(time.kubernetes) / 1000 };
    const m = { process: median(rss.process), kubernetes: median(rss.kubernetes) };
    const byComponent = (x?: ProcessMemory) =>
      Object.entries(x?.components ?? {})
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${v.toFixed(0)}`)
        .join(', ');
    const plot = await writePlot(out, 'tenants', {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: `A tenant on each runtime, each of ${o.rounds} rounds`,
      hconcat: [
        {
          width: 180,
          height: 200,
          data: { values: RUNTIMES.flatMap((r) => time[r].map((ms) => ({ runtime: r, s: ms / 1000 }))) },
          mark: { type: 'point', filled: true, size: 60 },
          encoding: {
            x: { field: 'runtime', type: 'nominal', title: null },
            y: { field: 's', type: 'quantitative', title: 'apply -> Ready (s)' },
            color: { field: 'runtime', type: 'nominal', legend: null },
          },
        },
        {
          width: 180,
          height: 200,
          data: { values: RUNTIMES.flatMap((r) => rss[r].map((mib) => ({ runtime: r, mib }))) },
          mark: { type: 'point', filled: true, size: 60 },
          encoding: {
            x: { field: 'runtime', type: 'nominal', title: null },
            y: { field: 'mib', type: 'quantitative', title: 'idle RSS (MiB)' },
            color: { field: 'runtime', type: 'nominal', legend: null },
          },
        },
      ],
    });
    return {
      lines: [
        `tenant apply -> Ready (median of ${o.rounds}): processes ${t.process.toFixed(1)} s, pods ${t.kubernetes.toFixed(1)} s, ratio ${ratio(t.kubernetes, t.process)}`,
        `tenant idle RSS, six components (median): processes ${m.process.toFixed(0)} MiB, pods ${m.kubernetes.toFixed(0)} MiB, ratio ${ratio(m.kubernetes, m.process)}`,
        `  processes, last round (MiB): ${byComponent(last.process)}`,
        `  pods, last round (MiB):      ${byComponent(last.kubernetes)}`,
        `  plot: ${plot}`,
      ],
      json: { readySeconds: t, rssMiB: m, rounds: { time, rss }, lastRound: last },
    };
  },
};
