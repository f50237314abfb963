/**
 * Runtimes (issue 9's measure, ADR 14): one control plane (etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler; certificates made beforehand) started by the process
 * runtime, the baseline, and by the kubernetes runtime as pods on the embedded host's real node,
 * rounds alternating: the time until all four are ready, and their memory after 10 s idle (RSS
 * and PSS of their processes; a pod's processes are found through its memory cgroup, the pause
 * container left out). A round of pods before the first counted one pulls the images.
 */
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { reuseConnections } from '../src/api/kubeClient.js';
import { readSet, writeControlPlanePki } from '../src/pki/controlPlanePki.js';
import {
  apiserverSpec,
  controllerManagerSpec,
  etcdSpec,
  IMAGE_PROGRAMS,
  placeInHost,
  podSANs,
  schedulerSpec,
} from '../src/runtime/controlPlane.js';
import { renderKubeconfigs } from '../src/runtime/kubeconfigs.js';
import { KubernetesRuntime } from '../src/runtime/kubernetesRuntime.js';
import { controlPlaneImages, FILE_SOURCES, storeFiles } from '../src/runtime/podWorkload.js';
import { ProcessRuntime } from '../src/runtime/processRuntime.js';
import type { LocalEnvironment } from '../src/worker/localEnvironment.js';
import { createLogger } from '../src/worker/logger.js';
import {
  directControlPlane,
  memoryOfRuntime,
  percentile,
  podMemory,
  say,
  type ProcessMemory,
} from './common.js';
import { ratio, type Scenario } from './scenario.js';

const median = (xs: number[]) => percentile(xs, 50);
const SERVICE_CIDR = '10.96.0.0/12';

/** A control plane for the kubernetes runtime in its own host namespace, its files in Secrets. */
async function podControlPlane(env: LocalEnvironment, runtime: KubernetesRuntime, id: string) {
  const kc = new KubeConfig();
  kc.loadFromFile(env.host.kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = `bench-${id}`;
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  const apiService = 'kosmos-apiserver';
  const svc = await core.createNamespacedService({
    namespace,
    body: { metadata: { name: apiService, namespace }, spec: { ports: [{ name: 'https', port: 443 }] } },
  });
  const pki = join(env.root, 'pod-planes', id, 'pki');
  const sans = podSANs(namespace, apiService);
  await writeControlPlanePki(pki, {
    clusterName: id,
    serviceCIDR: SERVICE_CIDR,
    advertiseAddress: '127.0.0.1',
    extraSANs: [svc.spec!.clusterIP!, ...sans.apiserver],
    etcdSANs: sans.etcd,
  });
  await storeFiles(core, namespace, FILE_SOURCES.pki.name, Object.fromEntries((await readSet(pki))!));
  const p = placeInHost({
    id,
    namespace,
    serviceCIDR: SERVICE_CIDR,
    apiService,
    probePki: pki,
    etcdUnsafeNoFsync: true,
  });
  await storeFiles(
    core,
    namespace,
    FILE_SOURCES.kubeconfigs.name,
    await renderKubeconfigs(pki, p.apiserverURL, id),
  );
  return {
    namespace,
    async start() {
      for (const spec of [etcdSpec, apiserverSpec, controllerManagerSpec, schedulerSpec].map((f) =>
        f(p, IMAGE_PROGRAMS),
      )) {
        await runtime.ensure(spec);
        await runtime.waitReady(id, spec.name, 300_000);
      }
    },
    async remove() {
      await runtime.remove(id);
      await core.deleteNamespace({ name: namespace });
    },
  };
}

export const runtimes: Scenario = {
  summary: 'one control plane as processes vs as pods of the host (time to ready, idle memory)',
  quick: { rounds: 2 },
  full: { rounds: 5 },
  realNode: true,
  async run({ env }, o) {
    const realNode = env.host.realNode;
    if (!realNode || !env.binaries.node) throw new Error('the runtimes benchmark needs the real node');
    const direct = new ProcessRuntime({
      root: join(env.root, 'direct'),
      logger: createLogger({ level: 'error' }),
    });
    const kc = reuseConnections(new KubeConfig());
    kc.loadFromFile(env.host.kubeconfigPath);
    const core = kc.makeApiClient(CoreV1Api);
    const pods = new KubernetesRuntime({
      kubeConfig: kc,
      images: await controlPlaneImages(env.binaries.node.imagesDir),
      nodeSelector: { 'kubernetes.io/hostname': realNode.name },
      pollMs: 200,
    });
    const time = { process: [] as number[], kubernetes: [] as number[] };
    const rss = { process: [] as number[], kubernetes: [] as number[] };
    const made: string[] = [];
    const last: { process?: ProcessMemory; kubernetes?: ProcessMemory } = {};
    try {
      say('warm-up: pulling the images onto the real node...');
      const warm = await podControlPlane(env, pods, 'warmup');
      await warm.start();
      await warm.remove();
      for (let round = 1; round <= o.rounds!; round++) {
        const plane = await directControlPlane(env, direct, `direct-${round}`);
        let t0 = performance.now();
        await plane.start();
        time.process.push(performance.now() - t0);
        await sleep(10_000);
        last.process = await memoryOfRuntime(direct, `direct-${round}`);
        rss.process.push(last.process.rss);
        await direct.remove(`direct-${round}`);

        const id = `pods-${round}`;
        const inPods = await podControlPlane(env, pods, id);
        made.push(inPods.namespace);
        t0 = performance.now();
        await inPods.start();
        time.kubernetes.push(performance.now() - t0);
        await sleep(10_000);
        last.kubernetes = await podMemory(core, inPods.namespace, id);
        rss.kubernetes.push(last.kubernetes.rss);
        await inPods.remove();
        say(
          `round ${round}: ready ${(time.process.at(-1)! / 1000).toFixed(1)} s / ${(time.kubernetes.at(-1)! / 1000).toFixed(1)} s, ` +
            `RSS ${rss.process.at(-1)!.toFixed(0)} / ${rss.kubernetes.at(-1)!.toFixed(0)} MiB (processes / pods)`,
        );
      }
    } finally {
      await direct.shutdown();
      // A round cut short leaves its namespace: gone with it, pods, claims and all.
      for (const namespace of made) await core.deleteNamespace({ name: namespace }).catch(() => undefined);
    }
    const t = { process: median(time.process) / 1000, kubernetes: median(time.kubernetes) / 1000 };
    const m = { process: median(rss.process), kubernetes: median(rss.kubernetes) };
    const byComponent = (x?: ProcessMemory) =>
      Object.entries(x?.components ?? {})
        .map(([k, v]) => `${k} ${v.toFixed(0)}`)
        .join(', ');
    return {
      lines: [
        `control plane ready (median of ${o.rounds}): processes ${t.process.toFixed(1)} s, pods ${t.kubernetes.toFixed(1)} s, ratio ${ratio(t.kubernetes, t.process)}`,
        `idle RSS (median): processes ${m.process.toFixed(0)} MiB, pods ${m.kubernetes.toFixed(0)} MiB, ratio ${ratio(m.kubernetes, m.process)}`,
        `  processes, last round: ${byComponent(last.process)}`,
        `  pods, last round:      ${byComponent(last.kubernetes)}`,
      ],
      json: { readySeconds: t, rssMiB: m, rounds: { time, rss }, lastRound: last },
    };
  },
};
