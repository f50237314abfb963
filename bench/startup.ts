/**
 * Start-up benchmark (issue 2). In one run, on one machine:
 *   baseline: etcd + kube-apiserver + kube-controller-manager + kube-scheduler started directly
 *             through the process runtime, one after the other, certificates made beforehand;
 *   product:  create a VirtualCluster (what `kubectl apply` does) until status.phase is
 *             Initialized, through the watcher, Temporal, the workflow and its activities.
 * Rounds alternate so drift hits both alike. Prints medians, their ratio and the RSS of one
 * tenant's processes, then one JSON line.
 *
 *   npm run bench [-- --rounds 5]
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from '../src/api/virtualCluster.js';
import type { HostCluster } from '../src/activities/hostCluster.js';
import { writeControlPlanePki } from '../src/pki/controlPlanePki.js';
import {
  apiserverSpec,
  controllerManagerSpec,
  etcdSpec,
  pkiDir,
  schedulerSpec,
  writeKubeconfigs,
  type ControlPlaneLayout,
} from '../src/runtime/controlPlane.js';
import { ProcessRuntime } from '../src/runtime/processRuntime.js';
import { createLogger } from '../src/worker/logger.js';
import { startLocalEnvironment } from '../src/worker/localEnvironment.js';
import { numericOptions } from './common.js';

const { rounds } = numericOptions({ rounds: 5 });
const logger = createLogger({ level: 'error' });
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const rssKiB = async (pid: number): Promise<number> => {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
};

async function main(): Promise<void> {
  const env = await startLocalEnvironment({ prefix: 'kvc-bench-', taskQueue: 'bench', logger });
  const { root, binaries, ports, operator } = env;
  const direct = new ProcessRuntime({ root: join(root, 'direct'), logger });
  try {
    const hostApi: HostCluster = operator.host;

    const baseline: number[] = [];
    const product: number[] = [];
    let rss: { component: string; kib: number }[] = [];
    for (let round = 1; round <= rounds; round++) {
      // Baseline: the same four components, certificates made before the clock starts.
      const [etcdClient, etcdPeer, apiserver, controllerManager, scheduler] = (await ports.allocate(
        `direct-${round}`,
        5,
      )) as [number, number, number, number, number];
      const layout: ControlPlaneLayout = {
        id: `direct-${round}`,
        dir: join(root, 'direct-planes', String(round)),
        address: '127.0.0.1',
        ports: { etcdClient, etcdPeer, apiserver, controllerManager, scheduler },
        serviceCIDR: '10.96.0.0/12',
      };
      await writeControlPlanePki(pkiDir(layout), {
        clusterName: layout.id,
        serviceCIDR: layout.serviceCIDR,
        advertiseAddress: '127.0.0.1',
      });
      await writeKubeconfigs(layout);
      const t0 = performance.now();
      for (const spec of [etcdSpec, apiserverSpec, controllerManagerSpec, schedulerSpec].map((f) =>
        f(layout, binaries),
      )) {
        await direct.ensure(spec);
        await direct.waitReady(spec.owner, spec.name, 120_000);
      }
      baseline.push(performance.now() - t0);
      await direct.remove(layout.id);

      // Product: create the object, wait for Initialized.
      const name = `bench-${round}`;
      const t1 = performance.now();
      await hostApi.custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace: 'default',
        body: { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace: 'default' }, spec: {} },
      });
      for (;;) {
        const vc = await hostApi.getVirtualCluster({ namespace: 'default', name });
        // Initialized: the control plane serves (clusterTree then takes it to Ready).
        if (vc?.status?.phase === 'Initialized' || vc?.status?.phase === 'Ready') break;
        if (vc?.status?.phase === 'Failed') throw new Error(`${name} failed: ${vc.status.message}`);
        if (performance.now() - t1 > 180_000) throw new Error(`${name} not Initialized after 180 s`);
        await new Promise((r) => setTimeout(r, 25));
      }
      product.push(performance.now() - t1);
      if (round === rounds) {
        await new Promise((r) => setTimeout(r, 5000)); // let the tenant settle before measuring memory
        const statuses = await operator.runtime!.list();
        rss = await Promise.all(
          statuses.filter((s) => s.pid).map(async (s) => ({ component: s.name, kib: await rssKiB(s.pid!) })),
        );
      }
      await hostApi.custom.deleteNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace: 'default',
        name,
      });
      while (await hostApi.getVirtualCluster({ namespace: 'default', name }))
        await new Promise((r) => setTimeout(r, 100));
      process.stderr.write(
        `round ${round}/${rounds}: direct ${baseline.at(-1)!.toFixed(0)} ms, VirtualCluster ${product.at(-1)!.toFixed(0)} ms\n`,
      );
    }

    const b = median(baseline);
    const p = median(product);
    const totalMiB = rss.reduce((a, r) => a + r.kib, 0) / 1024;
    const lines = [
      '',
      `start-up, median of ${rounds} (ms)`,
      `  direct: etcd+apiserver+controller-manager+scheduler   ${b.toFixed(0)}`,
      `  VirtualCluster: create -> Initialized                 ${p.toFixed(0)}`,
      `  ratio VirtualCluster / direct                          ${(p / b).toFixed(2)}`,
      '',
      'memory of one tenant after 5 s idle (RSS, MiB)',
      ...rss.map((r) => `  ${r.component.padEnd(26)} ${(r.kib / 1024).toFixed(1)}`),
      `  ${'total'.padEnd(26)} ${totalMiB.toFixed(1)}`,
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    process.stdout.write(
      JSON.stringify({
        bench: 'startup',
        rounds,
        directMs: baseline,
        virtualClusterMs: product,
        ratio: p / b,
        rssMiB: totalMiB,
      }) + '\n',
    );
  } finally {
    await direct.shutdown();
    await env.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
