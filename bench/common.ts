/** Helpers the benchmarks share: percentiles, timed pod runs, VirtualClusters, process samples. */
import {
  CoreV1Api,
  KubeConfig,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type V1Pod,
  type V1PodSpec,
} from '@kubernetes/client-node';
import type { Client } from '@temporalio/client';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { join } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { tenantId } from '../src/activities/index.js';
import { reuseConnections, statusCode } from '../src/api/kubeClient.js';
import { kwokNode } from '../src/runtime/embedded.js';
import type { Operator } from '../src/worker/operator.js';
import type { LocalEnvironment } from '../src/worker/localEnvironment.js';
import type { ProcessRuntime } from '../src/runtime/processRuntime.js';
import type { ComponentSpec, ControlPlaneRuntime } from '../src/runtime/types.js';
import { SHARED_OWNER } from '../src/runtime/sharedClusterTree.js';
import { writeControlPlanePki } from '../src/pki/controlPlanePki.js';
import {
  apiserverSpec,
  controllerManagerSpec,
  etcdSpec,
  kubeconfigPath,
  oneProcessSpec,
  pkiDir,
  placeOnMachine,
  schedulerSpec,
  type ControlPlaneLayout,
  type Placement,
} from '../src/runtime/controlPlane.js';
import { writeKubeconfigs } from '../src/runtime/kubeconfigs.js';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type VirtualCluster } from '../src/api/virtualCluster.js';
import type { HostCluster } from '../src/activities/hostCluster.js';
import { forEachLimited } from '../src/clustertree/queue.js';
import { prober } from '../src/runtime/probe.js';
import { statFields } from '../src/runtime/procfs.js';
import { ComponentsMissingError } from '../src/runtime/binaries.js';
import { CONTROL_PLANE_LABEL, ownerLabel } from '../src/runtime/podWorkload.js';
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

/**
 * A failure worth another try: the API server busy (429, 5xx) or the connection lost. undici
 * (client-node 2) says `TypeError: fetch failed` (the reason in `cause`) or `terminated` for a
 * cut-off body; node-fetch (client-node 1) said FetchError.
 */
function transient(e: unknown): boolean {
  const code = statusCode(e);
  const err = e as Error | undefined;
  const lost = err instanceof TypeError && /^(fetch failed|terminated)$/.test(err.message);
  return lost || err?.name === 'FetchError' || code === 429 || (code !== undefined && code >= 500);
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 900_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    // A request that fails under load (a connection reset, a 5xx or 429) is one more "not yet",
    // not the end of the run; the last one is reported if the wait times out. Any other error
    // (a tenant that failed) ends the wait.
    const v = await fn().catch((e: unknown) => {
      if (!transient(e)) throw e;
      lastError = e;
      return undefined;
    });
    if (v !== undefined) return v;
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`,
      );
    await new Promise((r) => setTimeout(r, intervalMs));
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
  namespace = 'default',
): Promise<void> {
  await host.custom.createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    plural: PLURAL,
    namespace,
    body: { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace }, spec },
  });
}

export async function readyVC(
  host: HostCluster,
  name: string,
  namespace = 'default',
): Promise<VirtualCluster> {
  return waitFor(`${name} Ready`, async () => {
    const vc = await host.getVirtualCluster({ namespace, name });
    if (vc?.status?.phase === 'Failed') throw new Error(`${name} failed: ${vc.status.message}`);
    return vc?.status?.phase === 'Ready' ? vc : undefined;
  });
}

/** A client of the tenant that keeps its connections, as the host's clients do. */
export function tenantKc(vc: VirtualCluster): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(Buffer.from(vc.spec.kubeconfig!, 'base64').toString());
  return reuseConnections(kc);
}

/** utime + stime (fields 14, 15) of a /proc/<pid>/stat text, 100 ticks a second. */
function ticksOf(stat: string): number {
  const f = statFields(stat);
  return Number(f[11]) + Number(f[12]);
}

export async function cpuTicks(pid: number): Promise<number> {
  return ticksOf(await readFile(`/proc/${pid}/stat`, 'utf8'));
}

/** Every process's CPU ticks, by pid, and the machine's busy and total ticks (/proc/stat). */
export interface CpuSnapshot {
  processes: Map<number, { name: string; ticks: number }>;
  busy: number;
  total: number;
}

export async function cpuSnapshot(): Promise<CpuSnapshot> {
  const processes = new Map<number, { name: string; ticks: number }>();
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    // A process may end between the listing and the read.
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
    if (!stat) continue;
    let name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    // Node.js names its main thread so: clusterTree (its entry point) or another Node.js process.
    if (name === 'MainThread' || name === 'node') {
      const argv = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      name = /clustertree/.test(argv) ? 'clusterTree (Node.js)' : 'Node.js';
    }
    processes.set(pid, { name, ticks: ticksOf(stat) });
  }
  // cpu  user nice system idle iowait irq softirq steal ...
  const all = (await readFile('/proc/stat', 'utf8'))
    .split('\n')[0]!
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const total = all.reduce((a, b) => a + b, 0);
  return { processes, busy: total - all[3]! - all[4]!, total };
}

/**
 * CPU seconds each kind of process spent between two snapshots: this process (the bench, with
 * the operator's worker and watcher in it), processes started in between (`name (new)`: the
 * components a run started), and every other by its name. A process that ended in between is
 * not counted. `busy` is the machine's share of its CPU time that was not idle.
 */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): { byName: Map<string, number>; busy: number } {
  const byName = new Map<string, number>();
  for (const [pid, p] of b.processes) {
    const kernel = p.name.startsWith('kworker/');
    // (A kernel worker's name changes with its work item.)
    const same = a.processes.get(pid);
    const before = same && (kernel || same.name === p.name) ? same : undefined;
    const name = kernel
      ? 'kernel workers'
      : pid === process.pid
        ? 'this process (bench, operator)'
        : before
          ? p.name
          : `${p.name} (new)`;
    const ticks = p.ticks - (before?.ticks ?? 0);
    if (ticks > 0) byName.set(name, (byName.get(name) ?? 0) + ticks / 100);
  }
  return { byName, busy: (b.busy - a.busy) / Math.max(1, b.total - a.total) };
}

/**
 * The host API server's requests so far, by `VERB resource[/subresource]`, from its
 * apiserver_request_total (its /metrics): what a run asked of the host, as differences.
 */
export async function hostRequests(kc: KubeConfig): Promise<Map<string, number>> {
  const server = new URL(kc.getCurrentCluster()!.server);
  const opts: RequestOptions = {
    hostname: server.hostname,
    port: server.port || 443,
    path: '/metrics',
  };
  await kc.applyToHTTPSOptions(opts);
  const text = await new Promise<string>((resolve, reject) => {
    const req = httpsRequest(opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: HTTP ${res.statusCode}`)),
      );
    });
    req.on('error', reject);
    req.end();
  });
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const labels = Object.fromEntries(
      [...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!] as [string, string]),
    );
    const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ''}`;
    counts.set(key, (counts.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return counts;
}

/** `after - before`, the keys that grew. */
export function countsBetween(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of after) if (v > (before.get(k) ?? 0)) out.set(k, v - (before.get(k) ?? 0));
  return out;
}

export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** A process's resident set and its proportional share (shared pages divided among their users), MiB. */
export async function memoryMiB(pid: number): Promise<{ rss: number; pss: number }> {
  const t = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(t)?.[1] ?? 0);
  return { rss: kib('Rss') / 1024, pss: kib('Pss') / 1024 };
}

/** Memory of a set of processes, summed and by component (MiB). */
export interface ProcessMemory {
  rss: number;
  pss: number;
  components: Record<string, number>;
  pssByComponent: Record<string, number>;
}

/** Memory of every running process of one tenant, by component and summed (MiB). */
export async function tenantMemory(operator: Operator, vc: VirtualCluster): Promise<ProcessMemory> {
  const id = tenantId({ namespace: vc.metadata.namespace, name: vc.metadata.name, uid: vc.metadata.uid });
  return memoryOfRuntime(operator.runtime!, id);
}

/** Memory of every running process of one owner of a runtime, summed and by component (MiB). */
export async function memoryOfRuntime(runtime: ControlPlaneRuntime, owner: string): Promise<ProcessMemory> {
  const running = (await runtime.list(owner)).filter((s) => s.pid);
  const out = {
    rss: 0,
    pss: 0,
    components: {} as Record<string, number>,
    pssByComponent: {} as Record<string, number>,
  };
  for (const s of running) {
    // A process shared by several tenants (clusterTree's) is theirs together: each counts its share.
    const share = 1 / (s.sharedBy ?? 1);
    const m = await memoryMiB(s.pid!).catch(() => ({ rss: 0, pss: 0 }));
    out.rss += m.rss * share;
    out.pss += m.pss * share;
    out.components[s.name] = m.rss * share;
    out.pssByComponent[s.name] = m.pss * share;
  }
  return out;
}

/** The CPU time (s) every running process of one owner of a runtime has used. */
export async function cpuSecondsOfRuntime(runtime: ControlPlaneRuntime, owner: string): Promise<number> {
  let total = 0;
  for (const s of await runtime.list(owner))
    if (s.pid) total += (await cpuTicks(s.pid).catch(() => 0)) / 100 / (s.sharedBy ?? 1);
  return total;
}

/**
 * The CPU time (s) every running process of the given tenants has used, by component; a shared
 * process's divided by the tenants it serves now (right over a window in which they do not
 * change, as the idle windows that read it).
 */
export async function tenantCpuSeconds(
  operator: Operator,
  vcs: VirtualCluster[],
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const vc of vcs) {
    const id = tenantId({ namespace: vc.metadata.namespace, name: vc.metadata.name, uid: vc.metadata.uid });
    for (const s of await operator.runtime!.list(id))
      if (s.pid)
        out[s.name] = (out[s.name] ?? 0) + (await cpuTicks(s.pid).catch(() => 0)) / 100 / (s.sharedBy ?? 1);
  }
  return out;
}

/** What the operator's shared clusterTree process holds (PSS, MiB): 0 when none runs. */
export async function sharedClusterTreeMiB(operator: Operator): Promise<number> {
  const [shared] = (await operator.runtime!.list(SHARED_OWNER)).filter((s) => s.pid);
  return shared ? (await memoryMiB(shared.pid!).catch(() => ({ pss: 0 }))).pss : 0;
}

/** MemAvailable of the machine (MiB). */
export async function memAvailableMiB(): Promise<number> {
  const t = await readFile('/proc/meminfo', 'utf8');
  return Number(/MemAvailable:\s+(\d+)/.exec(t)?.[1] ?? 0) / 1024;
}

/** One kwok node per name on the host (kwok makes each Ready and renews its Lease). */
export async function createKwokNodes(core: CoreV1Api, names: string[], pods = 250): Promise<void> {
  const capacity = { cpu: '64', memory: '256Gi', pods: String(pods) };
  await forEachLimited(names, 32, (name) => core.createNode({ body: kwokNode(name, { capacity }) }));
}

export async function deleteVC(host: HostCluster, name: string, namespace = 'default'): Promise<void> {
  await host.custom.deleteNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    plural: PLURAL,
    namespace,
    name,
  });
  await waitFor(`${name} gone`, async () =>
    (await host.getVirtualCluster({ namespace, name })) ? undefined : true,
  );
}

/**
 * The time each activity type of a workflow run took (ms): every scheduled -> completed span of
 * that type summed, from the run's history: where a tenant's time to Ready goes. reportStatus
 * runs beside the steps (nothing waits for it): its sum is work, not time on the path.
 */
export function stepDurations(times: ActivityTimes[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of times) out[d.type] = (out[d.type] ?? 0) + d.completed - d.scheduled;
  return out;
}

export interface ActivityTimes {
  type: string;
  scheduled: number;
  /** When its last attempt started, and which attempt that was. */
  started?: number;
  attempt?: number;
  completed: number;
}

/** When a workflow's newest run started (ms since the epoch). */
export async function workflowStartedAt(client: Client, workflowId: string): Promise<number> {
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  const t = events?.[0]?.eventTime as
    { seconds?: { toNumber(): number } | number; nanos?: number } | undefined;
  const s = typeof t?.seconds === 'number' ? t.seconds : (t?.seconds?.toNumber() ?? 0);
  return s * 1000 + (t?.nanos ?? 0) / 1e6;
}

/** Every completed activity of a workflow's history, with its times (ms since the epoch). */
export async function activityTimes(client: Client, workflowId: string): Promise<ActivityTimes[]> {
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  const ms = (t: unknown) => {
    const ts = t as { seconds?: { toNumber(): number } | number; nanos?: number } | null | undefined;
    const s = typeof ts?.seconds === 'number' ? ts.seconds : (ts?.seconds?.toNumber() ?? 0);
    return s * 1000 + (ts?.nanos ?? 0) / 1e6;
  };
  const scheduled = new Map<number, { type: string; at: number; started?: number; attempt?: number }>();
  const out: ActivityTimes[] = [];
  for (const e of events ?? []) {
    const a = e.activityTaskScheduledEventAttributes;
    if (a) scheduled.set(Number(e.eventId), { type: a.activityType?.name ?? '?', at: ms(e.eventTime) });
    const st = e.activityTaskStartedEventAttributes;
    const started = st ? scheduled.get(Number(st.scheduledEventId)) : undefined;
    if (started) {
      started.started = ms(e.eventTime);
      started.attempt = Number(st?.attempt ?? 1);
    }
    const c = e.activityTaskCompletedEventAttributes;
    const s = c ? scheduled.get(Number(c.scheduledEventId)) : undefined;
    if (s)
      out.push({
        type: s.type,
        scheduled: s.at,
        ...(s.started !== undefined ? { started: s.started } : {}),
        ...(s.attempt !== undefined ? { attempt: s.attempt } : {}),
        completed: ms(e.eventTime),
      });
  }
  return out;
}

/**
 * Temporal's own share of a workflow's steps, which run one after another or (etcd's and the API
 * server's) at once (reportStatus, beside
 * them, left out): from one step's end to the next one's scheduling (a workflow task), and from
 * scheduling to a worker's start of the step's last attempt (a retried step's failed attempts
 * and backoff count there too: `retried` says so).
 */
export function temporalShare(times: ActivityTimes[]): {
  betweenStepsMs: number;
  scheduledToStartMs: number;
  steps: number;
  retried: boolean;
} {
  const path = times.filter((d) => d.type !== 'reportStatus').sort((x, y) => x.scheduled - y.scheduled);
  let betweenStepsMs = 0;
  let scheduledToStartMs = 0;
  // Steps that run at once (etcd's and the API server's) end before the next is scheduled.
  let lastEnd: number | undefined;
  for (const d of path) {
    if (lastEnd !== undefined) betweenStepsMs += Math.max(0, d.scheduled - lastEnd);
    lastEnd = Math.max(lastEnd ?? 0, d.completed);
    if (d.started !== undefined) scheduledToStartMs += Math.max(0, d.started - d.scheduled);
  }
  const retried = path.some((d) => (d.attempt ?? 1) > 1);
  return { betweenStepsMs, scheduledToStartMs, steps: path.length, retried };
}

/** The number of events in the newest run of a workflow. */
export async function historyLength(client: Client, workflowId: string): Promise<number> {
  return ((await client.workflow.getHandle(workflowId).fetchHistory()).events ?? []).length;
}

/**
 * Renders a Vega-Lite chart to `<dir>/<name>.svg` without a browser; returns the path. Vega is
 * loaded only here, so it weighs on no measurement of this process (the operator's memory).
 */
export async function writePlot(dir: string, name: string, spec: TopLevelSpec): Promise<string> {
  const [{ parse, View }, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  const file = join(dir, `${name}.svg`);
  await mkdir(dir, { recursive: true });
  await writeFile(file, await view.toSVG());
  view.finalize();
  return file;
}

/**
 * Registers a Node and reports it Ready, as a kubelet's first status does (with `allocatable`,
 * what pods may use of it), and waits until the API server returns it Ready.
 */
export async function readyNode(
  core: CoreV1Api,
  name: string,
  allocatable?: Record<string, string>,
): Promise<void> {
  await core.createNode({ body: { metadata: { name } } });
  await core.patchNodeStatus(
    {
      name,
      body: {
        status: {
          ...(allocatable ? { capacity: allocatable, allocatable } : {}),
          conditions: [
            {
              type: 'Ready',
              status: 'True',
              reason: 'KubeletReady',
              message: 'ready',
              lastHeartbeatTime: new Date(),
              lastTransitionTime: new Date(),
            },
          ],
        },
      },
    },
    setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
  );
  await waitFor(`node ${name} Ready`, async () => {
    const n = await core.readNode({ name });
    return n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? true : undefined;
  });
}

/**
 * A control plane of the same four binaries (etcd, kube-apiserver, kube-controller-manager,
 * kube-scheduler) started directly through a process runtime, without the operator: the
 * benchmarks' floor and their plain cluster. Its certificates and kubeconfigs are made here,
 * before `start` can be timed. `oneProcess`: etcd and kube-control-plane (ADR 12, decision 16)
 * instead; `start` returns once all three of its components serve.
 */
export async function directControlPlane(
  env: LocalEnvironment,
  runtime: ProcessRuntime,
  id: string,
  oneProcess = false,
): Promise<{ layout: ControlPlaneLayout; kc: KubeConfig; start(o?: { together?: boolean }): Promise<void> }> {
  const [etcdClient, etcdPeer, apiserver, controllerManager, scheduler] = (await env.ports.allocate(
    id,
    5,
  )) as [number, number, number, number, number];
  const layout: ControlPlaneLayout = {
    id,
    dir: join(env.root, 'direct-planes', id),
    address: '127.0.0.1',
    ports: { etcdClient, etcdPeer, apiserver, controllerManager, scheduler },
    serviceCIDR: '10.96.0.0/12',
    etcdUnsafeNoFsync: true,
  };
  await writeControlPlanePki(pkiDir(layout), {
    clusterName: id,
    serviceCIDR: layout.serviceCIDR,
    advertiseAddress: '127.0.0.1',
  });
  await writeKubeconfigs(layout);
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath(layout, 'admin'));
  return {
    layout,
    kc: reuseConnections(kc),
    /**
     * One after the other, each awaited before the next starts; `together`: etcd and the API
     * server (or the one process) started at once, then each awaited.
     */
    async start(o = {}) {
      const p = placeOnMachine(layout);
      const { kubeControlPlane } = env.binaries;
      if (oneProcess && !kubeControlPlane) throw new ComponentsMissingError(['kube-control-plane']);
      const one = (pl: Placement) =>
        oneProcessSpec(pl, { ...env.binaries, kubeControlPlane: kubeControlPlane! });
      const builders = oneProcess
        ? [etcdSpec, one]
        : [etcdSpec, apiserverSpec, controllerManagerSpec, schedulerSpec];
      const specs = builders.map((f) => f(p, env.binaries));
      if (o.together) {
        const [etcd, api] = specs as [ComponentSpec, ComponentSpec];
        await Promise.all([runtime.ensure(etcd), runtime.ensure(api)]);
        for (const spec of [etcd, api]) await runtime.waitReady(spec.owner, spec.name, 120_000);
        specs.splice(0, 2);
      }
      for (const spec of specs) {
        await runtime.ensure(spec);
        await runtime.waitReady(spec.owner, spec.name, 120_000);
      }
      if (oneProcess)
        for (const spec of [controllerManagerSpec(p, env.binaries), schedulerSpec(p, env.binaries)]) {
          const probe = prober(spec.probe!);
          await waitFor(
            `${spec.name} in kube-control-plane serving`,
            async () => ((await probe().catch(() => 0)) === 200 ? true : undefined),
            120_000,
            50,
          );
        }
    },
  };
}

/** The processes of a pod, from its memory cgroup (cgroup v1, the kubelet's cgroupfs driver). */
async function podPids(uid: string): Promise<number[]> {
  const find = async (dir: string, depth: number): Promise<string | undefined> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (!e.isDirectory()) continue;
      if (e.name === `pod${uid}`) return join(dir, e.name);
      if (depth > 0) {
        const found = await find(join(dir, e.name), depth - 1);
        if (found) return found;
      }
    }
    return undefined;
  };
  const pod = await find('/sys/fs/cgroup/memory/kubepods', 2);
  if (!pod) return [];
  const pids: number[] = [];
  for (const e of await readdir(pod, { withFileTypes: true }))
    if (e.isDirectory())
      for (const line of (await readFile(join(pod, e.name, 'cgroup.procs'), 'utf8').catch(() => '')).split(
        '\n',
      ))
        if (line) pids.push(Number(line));
  return pids;
}

/** Memory of the processes of an owner's control-plane pods (pause left out), summed and by component (MiB). */
export async function podMemory(core: CoreV1Api, namespace: string, owner: string): Promise<ProcessMemory> {
  const out: ProcessMemory = { rss: 0, pss: 0, components: {}, pssByComponent: {} };
  const pods = await core.listNamespacedPod({
    namespace,
    labelSelector: `${CONTROL_PLANE_LABEL}=${ownerLabel(owner)}`,
  });
  for (const pod of pods.items) {
    const name = pod.metadata?.labels?.['app.kubernetes.io/name'] ?? pod.metadata!.name!;
    for (const pid of await podPids(pod.metadata!.uid!)) {
      const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
      if (comm === 'pause') continue;
      const m = await memoryMiB(pid).catch(() => ({ rss: 0, pss: 0 }));
      out.rss += m.rss;
      out.pss += m.pss;
      out.components[name] = (out.components[name] ?? 0) + m.rss;
      out.pssByComponent[name] = (out.pssByComponent[name] ?? 0) + m.pss;
    }
  }
  return out;
}
