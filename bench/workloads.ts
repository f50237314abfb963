/**
 * Workloads on the real node (issue 7), measured in one run on one machine: the same things
 * done directly against the host, then through a tenant that promotes the node.
 *
 *   pod start: N busybox pods on the real node, create call -> Running seen by a watch
 *     (host scheduler and kubelet, versus tenant scheduler, clusterTree, host pod, status back);
 *   kubectl logs: time to the first byte of `kubectl logs` of a running pod;
 *   kubectl exec: round trip of `kubectl exec <pod> -- true`;
 *   DNS: one lookup of a Service name from inside a pod (host DNS versus the tenant's DNS),
 *     as the average of a loop of lookups in one exec.
 *
 *   npm run bench:workloads [-- --pods 50 --repeat 20]
 */
import { spawn } from 'node:child_process';
import { createLogger } from '../src/worker/logger.js';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createVC, numericOptions, percentile, podRun, readyVC, say, tenantKc, waitFor } from './common.js';
import { startLocalEnvironment } from '../src/worker/localEnvironment.js';

const { pods: PODS, repeat: REPEAT } = numericOptions({ pods: 50, repeat: 20 });
const LOOKUPS = 300;

/** Wall time (ms) until `kubectl args` prints its first byte, and until it exits. */
function timedKubectl(
  kubectl: string,
  kubeconfig: string,
  args: string[],
): Promise<{ firstByte: number; total: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let firstByte = 0;
    const child = spawn(kubectl, ['--kubeconfig', kubeconfig, ...args]);
    child.stdout.once('data', () => (firstByte = performance.now() - t0));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve({ firstByte, total: performance.now() - t0 })
        : reject(new Error(`kubectl ${args.join(' ')}: exit ${code}`)),
    );
  });
}

interface SideResult {
  latencies: number[];
  wallMs: number;
  logsFirstByte: number[];
  execRoundTrip: number[];
  dnsMsPerLookup: number;
}

async function side(
  kubectl: string,
  kubeconfig: string,
  kc: KubeConfig,
  namespace: string,
  spec: object,
): Promise<SideResult> {
  const run = await podRun(kc, namespace, PODS, spec as never);
  const logsFirstByte: number[] = [];
  const execRoundTrip: number[] = [];
  for (let i = 0; i < REPEAT; i++) {
    logsFirstByte.push(
      (await timedKubectl(kubectl, kubeconfig, ['-n', namespace, 'logs', 'bench-0'])).firstByte,
    );
    execRoundTrip.push(
      (await timedKubectl(kubectl, kubeconfig, ['-n', namespace, 'exec', 'bench-0', '--', 'true'])).total,
    );
  }
  // One exec runs the whole loop, so kubectl's own start-up is not in the per-lookup figure.
  // busybox's date has no %N: time it in centiseconds from /proc/uptime.
  const now = "$(tr -d . < /proc/uptime | cut -d' ' -f1)";
  const loop = `s=${now}; for i in $(seq ${LOOKUPS}); do nslookup kubernetes.default.svc.cluster.local >/dev/null || exit 1; done; e=${now}; echo $(( (e - s) * 10 ))`;
  const totalMs = await new Promise<number>((resolve, reject) => {
    let out = '';
    let err = '';
    const child = spawn(kubectl, [
      '--kubeconfig',
      kubeconfig,
      '-n',
      namespace,
      'exec',
      'bench-0',
      '--',
      'sh',
      '-c',
      loop,
    ]);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) =>
      code === 0
        ? resolve(Number(out.trim()))
        : reject(new Error(`DNS loop failed (${code}): ${err.trim()}`)),
    );
  });
  return { ...run, logsFirstByte, execRoundTrip, dnsMsPerLookup: totalMs / LOOKUPS };
}

async function main(): Promise<void> {
  const env = await startLocalEnvironment({
    prefix: 'kvc-bench-wl-',
    taskQueue: 'bench-workloads',
    logger: createLogger({ level: 'error' }),
    etcdUnsafeNoFsync: true,
    realNode: true,
  });
  try {
    const node = env.host.realNode;
    if (!node) throw new Error('no real node on this machine (see the log above): nothing to measure');
    const busybox = (await readFile(join(env.binaries.node!.imagesDir, 'busybox.name'), 'utf8')).trim();
    const hostKubeconfig = env.host.kubeconfigPath;
    const host = env.operator.host;
    const podSpec = (nodeName?: string) => ({
      ...(nodeName ? { nodeName } : {}),
      containers: [{ name: 'c', image: busybox, command: ['sh', '-c', 'echo ready; exec sleep 3600'] }],
      terminationGracePeriodSeconds: 0,
    });

    say(`direct: ${PODS} pods on ${node.name} through the host...`);
    await host.core.createNamespace({ body: { metadata: { name: 'bench-direct' } } });
    await waitFor('the default service account in bench-direct', () =>
      host.core
        .readNamespacedServiceAccount({ name: 'default', namespace: 'bench-direct' })
        .catch(() => undefined),
    );
    const direct = await side(
      env.binaries.kubectl,
      hostKubeconfig,
      host.kubeConfig,
      'bench-direct',
      podSpec(node.name),
    );
    await host.core.deleteNamespace({ name: 'bench-direct' });
    await waitFor('the direct pods gone from the node', async () => {
      const pods = await host.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node.name}` });
      return pods.items.length === 0 ? true : undefined;
    });

    say(`through a tenant: ${PODS} pods on ${node.name} through clusterTree...`);
    await createVC(host, 'bench', { promoteResources: { nodes: [node.name] } });
    const vc = await readyVC(host, 'bench');
    const tkc = tenantKc(vc);
    const tenantKubeconfig = join(env.root, 'tenant.kubeconfig');
    await writeFile(tenantKubeconfig, Buffer.from(vc.spec.kubeconfig!, 'base64'), { mode: 0o600 });
    await waitFor('the tenant default service account', () =>
      tkc
        .makeApiClient(CoreV1Api)
        .readNamespacedServiceAccount({ name: 'default', namespace: 'default' })
        .catch(() => undefined),
    );
    const tenant = await side(env.binaries.kubectl, tenantKubeconfig, tkc, 'default', podSpec());

    const p = percentile;
    const row = (label: string, d: number[], t: number[]) =>
      `  ${label.padEnd(26)} ${p(d, 50).toFixed(0).padStart(7)} ${p(d, 99).toFixed(0).padStart(7)} ${p(t, 50).toFixed(0).padStart(8)} ${p(t, 99).toFixed(0).padStart(7)} ${(p(t, 50) / p(d, 50)).toFixed(2).padStart(7)} ${(p(t, 99) / p(d, 99)).toFixed(2).padStart(7)}`;
    const lines = [
      '',
      `real node ${node.name}, ${PODS} pods, ${REPEAT} repeats (ms)`,
      `                             direct p50     p99  tenant p50     p99  ratio50  ratio99`,
      row('pod create -> Running', direct.latencies, tenant.latencies),
      row('kubectl logs first byte', direct.logsFirstByte, tenant.logsFirstByte),
      row('kubectl exec round trip', direct.execRoundTrip, tenant.execRoundTrip),
      `  pods/s: direct ${((PODS / direct.wallMs) * 1000).toFixed(1)}, tenant ${((PODS / tenant.wallMs) * 1000).toFixed(1)}`,
      `  DNS lookup from a pod (average of ${LOOKUPS}): host ${direct.dnsMsPerLookup.toFixed(2)} ms, tenant ${tenant.dnsMsPerLookup.toFixed(2)} ms, ratio ${(tenant.dnsMsPerLookup / direct.dnsMsPerLookup).toFixed(2)}`,
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    const summary = (r: SideResult) => ({
      podP50: p(r.latencies, 50),
      podP99: p(r.latencies, 99),
      wallMs: r.wallMs,
      logsP50: p(r.logsFirstByte, 50),
      execP50: p(r.execRoundTrip, 50),
      dnsMs: r.dnsMsPerLookup,
    });
    process.stdout.write(
      JSON.stringify({ bench: 'workloads', pods: PODS, direct: summary(direct), tenant: summary(tenant) }) +
        '\n',
    );
  } finally {
    await env.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
