/** Helpers the benchmarks share: percentiles, timed pod runs, VirtualClusters, process samples. */
import { CoreV1Api, KubeConfig, ListWatch, Watch, type V1Pod, type V1PodSpec } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type VirtualCluster } from '../src/api/virtualCluster.js';
import type { HostCluster } from '../src/activities/hostCluster.js';
import { forEachLimited } from '../src/clustertree/queue.js';
import { parseArgs } from 'node:util';

export const say = (s: string): void => void process.stderr.write(s + '\n');

/**
 * A benchmark's numeric options (`--pods 1000`), each with its default, parsed by node:util's
 * parseArgs: an unknown option or a value that is not a positive number stops the run.
 */
export function numericOptions<T extends Record<string, number>>(defaults: T): T {
  const { values } = parseArgs({
    options: Object.fromEntries(Object.keys(defaults).map((k) => [k, { type: 'string' as const }])),
    strict: true,
  });
  const out: Record<string, number> = { ...defaults };
  for (const [k, v] of Object.entries(values)) {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${k} must be a positive number, not ${String(v)}`);
    out[k] = n;
  }
  return out as T;
}

export const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 900_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Creates `count` pods (`bench-0`, ...) in `namespace` through `kc`, `concurrency` at a time, and
 * returns each one's create-to-Running time (ms) and the whole run's duration; a watch sees
 * `Running`.
 */
export async function podRun(
  kc: KubeConfig,
  namespace: string,
  count: number,
  spec: V1PodSpec,
  concurrency = 32,
): Promise<{ latencies: number[]; wallMs: number }> {
  const core = kc.makeApiClient(CoreV1Api);
  const created = new Map<string, number>();
  const running = new Map<string, number>();
  let done: () => void;
  const all = new Promise<void>((r) => (done = r));
  const watch = new ListWatch<V1Pod>(
    `/api/v1/namespaces/${namespace}/pods`,
    new Watch(kc),
    () => core.listNamespacedPod({ namespace }),
    false,
  );
  const seen = (p: V1Pod) => {
    const name = p.metadata!.name!;
    if (p.status?.phase === 'Running' && !running.has(name) && created.has(name)) {
      running.set(name, performance.now());
      if (running.size === count) done();
    }
  };
  watch.on('add', seen);
  watch.on('update', seen);
  await watch.start();
  const t0 = performance.now();
  const names = Array.from({ length: count }, (_, i) => `bench-${i}`);
  await forEachLimited(names, concurrency, async (name) => {
    created.set(name, performance.now());
    await core.createNamespacedPod({
      namespace,
      body: { metadata: { name, labels: { app: 'bench' } }, spec },
    });
  });
  const timeout = setTimeout(() => done(), 600_000);
  await all;
  clearTimeout(timeout);
  await watch.stop();
  if (running.size < count)
    throw new Error(`only ${running.size}/${count} pods Running in ${namespace} after 10 min`);
  const latencies = names.map((n) => running.get(n)! - created.get(n)!);
  return { latencies, wallMs: Math.max(...running.values()) - t0 };
}

export async function createVC(
  host: HostCluster,
  name: string,
  spec: Record<string, unknown>,
): Promise<void> {
  await host.custom.createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    plural: PLURAL,
    namespace: 'default',
    body: { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace: 'default' }, spec },
  });
}

export async function readyVC(host: HostCluster, name: string): Promise<VirtualCluster> {
  return waitFor(`${name} Ready`, async () => {
    const vc = await host.getVirtualCluster({ namespace: 'default', name });
    if (vc?.status?.phase === 'Failed') throw new Error(`${name} failed: ${vc.status.message}`);
    return vc?.status?.phase === 'Ready' ? vc : undefined;
  });
}

export function tenantKc(vc: VirtualCluster): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(Buffer.from(vc.spec.kubeconfig!, 'base64').toString());
  return kc;
}

export async function cpuTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15), 100 ticks a second
}

export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}
