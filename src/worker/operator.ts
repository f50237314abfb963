/**
 * Wiring: a Temporal worker running the VirtualCluster workflow and its activities, and the
 * watcher that feeds it from the host cluster. `kosmos-vc up`, the standalone worker and the
 * tests all assemble the operator here.
 */
import type { ClusterTreeTimings } from '../activities/clusterTree.js';
import { KubeConfig } from '@kubernetes/client-node';
import { Client, Connection } from '@temporalio/client';
import {
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  bundleWorkflowCode,
  type LogEntry,
  type WorkflowBundleOption,
} from '@temporalio/worker';
import proto from '@temporalio/proto';
import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createActivitiesWithPool, type ActivityDeps } from '../activities/index.js';
import type { WarmPool } from '../activities/warmPool.js';
import { DEFAULT_SERVICE_CIDR } from '../api/virtualCluster.js';
import { HostCluster } from '../activities/hostCluster.js';
import { resolveBinaries, type Binaries } from '../runtime/binaries.js';
import { SHARED_OWNER, SharedClusterTreeRuntime } from '../runtime/sharedClusterTree.js';
import { clusterTreeProcess, compileCacheDirOf } from '../activities/clusterTree.js';
import { ProcessRuntime } from '../runtime/processRuntime.js';
import { KubernetesRuntime, type KubernetesRuntimeOptions } from '../runtime/kubernetesRuntime.js';
import { POD_COMPONENTS, controlPlaneImages } from '../runtime/podWorkload.js';
import { SplitRuntime } from '../runtime/splitRuntime.js';
import type { ControlPlaneRuntime } from '../runtime/types.js';
import { VirtualClusterWatcher } from '../watcher/index.js';
import { searchAttributes } from '../workflows/definitions.js';
import { OperatorMetrics, serveMetrics } from '../metrics/operator.js';
import { createLogger, type Logger } from './logger.js';

let runtimeInstalled = false;
/**
 * Once per process: the SDK logs through ours (warnings and up, one line each, errors by their
 * message), signals stay ours, and no worker heartbeats (the dev server lacks the API).
 */
export function installTemporalRuntime(logger: Logger = createLogger()): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const sdk = logger.child({ part: 'temporal-sdk' });
  const forward = (entry: LogEntry): void => {
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(entry.meta ?? {})) {
      if (['sdkComponent', 'taskToken', 'namespace'].includes(k)) continue;
      fields[k] = v instanceof Error ? v.message : v;
    }
    const level = entry.level === 'ERROR' ? 'error' : entry.level === 'WARN' ? 'warn' : 'debug';
    sdk[level](entry.message, fields);
  };
  Runtime.install({
    workerHeartbeatInterval: 0,
    logger: new DefaultLogger('WARN', forward),
    // Signals are the CLI's to handle: it stops the watcher, then the worker, then the tenants.
    shutdownSignals: [],
  });
}

const here = fileURLToPath(import.meta.url);
export const workflowsPath = join(here, '..', '..', 'workflows', `index${extname(here)}`);

/** Where `npm run build` leaves the bundled workflow code (src/worker/bundle.ts): dist/. */
export const prebuiltBundlePath = join(here, '..', '..', '..', 'workflow-bundle.js');

/** The newest modification time of the compiled files under `dir`. */
async function newestJs(dir: string): Promise<number> {
  let newest = 0;
  for (const f of await readdir(dir, { recursive: true })) {
    if (f.endsWith('.js')) newest = Math.max(newest, (await stat(join(dir, f))).mtimeMs);
  }
  return newest;
}

let bundle: Promise<WorkflowBundleOption> | undefined;
/**
 * The workflow bundle, shared by every worker of the process: the one `npm run build` made when
 * it is newer than every compiled file (a tsc run alone leaves it stale), else built here, once
 * (about 2 s). Tests, which run the TypeScript sources, always build it here.
 */
export function workflowBundle(): Promise<WorkflowBundleOption> {
  bundle ??= (async () => {
    if (extname(here) === '.js') {
      const built = await stat(prebuiltBundlePath).catch(() => undefined);
      if (built && built.mtimeMs >= (await newestJs(join(here, '..', '..'))))
        return { codePath: prebuiltBundlePath };
    }
    return bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('WARN') });
  })();
  return bundle;
}

/** Registers the search attributes the workflows set; false when the service does not allow it. */
export async function ensureSearchAttributes(
  connection: Connection,
  namespace: string,
  logger: Logger,
): Promise<boolean> {
  const wanted = Object.values(searchAttributes).map((k) => k.name);
  try {
    const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
    const missing = wanted.filter((n) => !(customAttributes && n in customAttributes));
    if (missing.length === 0) return true;
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(
        missing.map((n) => [n, proto.temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD]),
      ),
    });
    logger.info('registered search attributes', { names: missing });
    return true;
  } catch (e) {
    logger.warn('search attributes unavailable; workflows will not be filterable by VirtualCluster', {
      error: (e as Error).message,
    });
    return false;
  }
}

/**
 * New tenants' control planes, clusterTree and DNS as pods of their host namespaces (ADR 14).
 * `images`: each component's image (default: those setup built and `npm run image` packed).
 */
export type PodControlPlane = Partial<Omit<KubernetesRuntimeOptions, 'kubeConfig'>>;

export interface OperatorOptions {
  /** The host cluster; absent: the cluster this pod runs in, as its service account (the chart). */
  kubeconfigPath?: string;
  /** Where new tenants' control planes run: absent, processes of this machine. */
  pods?: PodControlPlane;
  temporalAddress: string;
  temporalNamespace: string;
  taskQueue: string;
  stateDir: string;
  logger: Logger;
  worker?: boolean;
  watcher?: boolean;
  readinessTimeoutMs?: number;
  /** Workflows the worker keeps in memory between tasks (default: the Temporal SDK's). */
  workflowCache?: number;
  /**
   * One clusterTree process serves this worker's tenants (default), or false: a process each
   * (ADR 12, decision 13). Tenants whose control plane runs in pods always have their own pod.
   */
  sharedClusterTree?: boolean;
  etcdUnsafeNoFsync?: boolean;
  relistIntervalMs?: number;
  /** Called when the worker dies of a fatal error (the CLI then stops and exits non-zero). */
  onWorkerFailed?: (e: Error) => void;
  /** Server-side apply the VirtualCluster CRD to the host before watching (`up`, the bench). */
  applyCRD?: boolean;
  /** Watch VirtualClusters in this namespace only (default: all namespaces). */
  watchNamespace?: string;
  binaries?: Binaries;
  /** clusterTree's heartbeat and resync periods (tests shorten them). */
  clusterTree?: ClusterTreeTimings;
  /** How often a workflow tries again to promote named nodes that were missing or taken. */
  promotionRetryMs?: number;
  /** An address of this machine host pods reach: tenant API and DNS for pods (ADR 7). */
  nodeAddress?: string;
  /** The host's pod range: addresses mirrored EndpointSlices may name besides the node's. */
  podCIDR?: string;
  /** Tenants may ask for spec.podSecurity: privileged (root on their promoted nodes). */
  allowPrivilegedTenants?: boolean;
  /**
   * The namespace this operator's pods run in (the chart's): tenants' host namespaces admit
   * connections from it (their isolation policy), for the operator's calls to pods in them.
   */
  operatorNamespace?: string;
  /** The exposures of tenant API servers beside ClusterIP this operator makes (default: both). */
  exposeTypes?: readonly ('NodePort' | 'LoadBalancer')[];
  /**
   * An image with `sh` and `sed` on the host nodes: puts the FQDN of a tenant pod with a subdomain
   * in its /etc/hosts, as the tenant names it. Unset: such pods keep the host kubelet's file.
   */
  hostsImage?: string;
  /** Where backups are written and restored from (default <stateDir>/backups). */
  backupDir?: string;
  /**
   * Serve Prometheus `/metrics` here (port 0 picks one; host '' every interface); unset: no
   * endpoint. `required`: fail to start when the address cannot be had, else warn and go on.
   */
  metrics?: { host: string; port: number; required?: boolean };
  /**
   * Control planes this worker starts ahead for new tenants of the default service range (ADR 12,
   * decision 15; processes only). `refillDelayMs`: how long after a claim the next one is started.
   */
  warmPool?: { size: number; refillDelayMs?: number };
  /**
   * A tenant's API server, controller-manager and scheduler as one process (ADR 12, decisions 16
   * and 21). Default: yes where control planes are processes; never in pods (refused when asked).
   */
  oneProcess?: boolean;
}

export interface Operator {
  host: HostCluster;
  client: Client;
  runtime?: SharedClusterTreeRuntime;
  watcher?: VirtualClusterWatcher;
  metrics: OperatorMetrics;
  /** The warm pool this worker fills, when it has one. */
  warmPool?: WarmPool;
  /** Where `/metrics` is served, when it is. */
  metricsUrl?: string;
  /** Stops the watcher and the worker; `stopTenants` also stops every tenant process. */
  stop(opts?: { stopTenants?: boolean }): Promise<void>;
}

function hostFromKubeconfig(path: string | undefined): HostCluster {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromCluster();
  return new HostCluster(kc);
}

export async function startOperator(opts: OperatorOptions): Promise<Operator> {
  if ((opts.warmPool?.size ?? 0) > 0 && opts.pods)
    throw new Error(
      'a warm pool (KOSMOS_VC_WARM_POOL) keeps control planes as processes of this machine: not with KOSMOS_VC_RUNTIME=kubernetes',
    );
  if (opts.oneProcess && opts.pods)
    throw new Error(
      'KOSMOS_VC_ONE_PROCESS runs control planes as processes of this machine: not with KOSMOS_VC_RUNTIME=kubernetes',
    );
  const oneProcess = opts.oneProcess ?? !opts.pods;
  // Refused at a worker's start rather than at every tenant's step (setup builds it: `npm run setup`).
  // A machine missing other programs too starts, and each tenant's step says what is missing.
  const programs = opts.binaries ?? (await resolveBinaries().catch(() => undefined));
  if (oneProcess && opts.worker !== false && programs && !programs.kubeControlPlane)
    throw new Error(
      `KOSMOS_VC_ONE_PROCESS${opts.oneProcess === undefined ? ' (the default)' : ''} needs kube-control-plane, ` +
        'which setup builds: run `npm run setup` first, or set KOSMOS_VC_ONE_PROCESS=false',
    );
  installTemporalRuntime(opts.logger);
  const host = hostFromKubeconfig(opts.kubeconfigPath);
  if (opts.applyCRD) await host.applyCRD();
  const connection = await Connection.connect({ address: opts.temporalAddress });
  const client = new Client({ connection, namespace: opts.temporalNamespace });
  const withSearchAttributes = await ensureSearchAttributes(connection, opts.temporalNamespace, opts.logger);

  const metrics = new OperatorMetrics({ processMetrics: opts.metrics !== undefined });
  // Served first: an address that was asked for and is taken stops the start before anything runs.
  let served: Awaited<ReturnType<typeof serveMetrics>> | undefined;
  if (opts.metrics) {
    const { host: at, port, required } = opts.metrics;
    served = await serveMetrics(metrics.registry, port, at).catch((e: unknown) => {
      const why = `cannot serve /metrics on ${at}:${port}: ${(e as Error).message}`;
      if (required) throw new Error(`${why} (KOSMOS_VC_METRICS_ADDRESS; "off" serves none)`);
      // The default address: another operator on the machine has it. Not worth refusing to run.
      opts.logger.warn(`${why}; running without (set KOSMOS_VC_METRICS_ADDRESS per process)`);
      return undefined;
    });
    if (served) opts.logger.info('metrics', { url: served.url });
  }
  const poolSize = opts.warmPool?.size ?? 0;
  let runtime: SharedClusterTreeRuntime | undefined;
  let warmPool: WarmPool | undefined;
  let worker: Worker | undefined;
  let workerDone: Promise<void> | undefined;
  let nativeConnection: NativeConnection | undefined;
  if (opts.worker !== false) {
    runtime = new SharedClusterTreeRuntime(
      new ProcessRuntime({
        root: join(opts.stateDir, 'runtime'),
        logger: opts.logger.child({ part: 'runtime' }),
      }),
      { dir: join(opts.stateDir, 'clustertree-tenants'), shared: opts.sharedClusterTree ?? true },
    );
    const resumed = await runtime.resume();
    if (resumed.length > 0) opts.logger.info('resumed tenant components', { count: resumed.length });
    if (!opts.pods) {
      // The shared clusterTree process starts with the worker: a tenant's starts in it (ADR 12,
      // decision 13). Without a built clusterTree, the first tenant says so.
      const entry =
        opts.binaries?.clusterTree ?? (await resolveBinaries().catch(() => undefined))?.clusterTree;
      if (entry)
        await runtime
          .warm({
            owner: SHARED_OWNER,
            ...clusterTreeProcess(entry, '--config=', compileCacheDirOf(opts.stateDir)),
          })
          .catch((e: unknown) =>
            opts.logger.warn('the shared clusterTree did not start', { error: (e as Error).message }),
          );
    }
    let tenantRuntime: ControlPlaneRuntime = runtime;
    if (opts.pods) {
      // The images setup built on this machine, where it did (not in the operator's own image),
      // under those the options name (KOSMOS_VC_IMAGES, the chart's values).
      const binaries = opts.binaries ?? (await resolveBinaries().catch(() => undefined));
      const imagesDir = binaries?.node?.imagesDir;
      const images = {
        ...(imagesDir ? await controlPlaneImages(imagesDir) : {}),
        ...opts.pods.images,
      };
      const missing = POD_COMPONENTS.filter((c) => !images[c]);
      if (missing.length > 0)
        throw new Error(
          `control planes in pods (KOSMOS_VC_RUNTIME=kubernetes) need images of ${missing.join(', ')}: ` +
            'setup builds them (npm run setup; npm run image for clustertree), or KOSMOS_VC_IMAGES names them',
        );
      tenantRuntime = new SplitRuntime(
        new KubernetesRuntime({ ...opts.pods, images, kubeConfig: host.kubeConfig }),
        runtime,
      );
    }
    const deps: ActivityDeps = {
      host,
      runtime: tenantRuntime,
      ...(opts.pods ? { controlPlaneRuntime: 'kubernetes' as const } : {}),
      binaries: opts.binaries ?? resolveBinaries,
      stateDir: opts.stateDir,
      logger: opts.logger.child({ part: 'activities' }),
      ...(opts.readinessTimeoutMs ? { readinessTimeoutMs: opts.readinessTimeoutMs } : {}),
      ...(opts.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {}),
      ...(opts.clusterTree ? { clusterTree: opts.clusterTree } : {}),
      ...(opts.nodeAddress ? { nodeAddress: opts.nodeAddress } : {}),
      ...(opts.podCIDR ? { podCIDR: opts.podCIDR } : {}),
      ...(opts.allowPrivilegedTenants ? { allowPrivilegedTenants: true } : {}),
      ...(opts.operatorNamespace ? { operatorNamespace: opts.operatorNamespace } : {}),
      ...(opts.exposeTypes ? { exposeTypes: opts.exposeTypes } : {}),
      ...(opts.hostsImage ? { hostsImage: opts.hostsImage } : {}),
      ...(opts.backupDir ? { backupDir: opts.backupDir } : {}),
      ...(oneProcess ? { oneProcess: true } : {}),
      schedules: { client, taskQueue: opts.taskQueue },
      // Size 0 too: the slots an earlier run with a pool left are removed.
      ...(!opts.pods
        ? {
            warmPool: {
              size: poolSize,
              serviceCIDR: DEFAULT_SERVICE_CIDR,
              ...(opts.warmPool?.refillDelayMs !== undefined
                ? { refillDelayMs: opts.warmPool.refillDelayMs }
                : {}),
            },
          }
        : {}),
    };
    const assembled = createActivitiesWithPool(deps);
    warmPool = assembled.warmPool;
    nativeConnection = await NativeConnection.connect({ address: opts.temporalAddress });
    worker = await Worker.create({
      connection: nativeConnection,
      namespace: opts.temporalNamespace,
      taskQueue: opts.taskQueue,
      workflowBundle: await workflowBundle(),
      ...(opts.workflowCache !== undefined ? { maxCachedWorkflows: opts.workflowCache } : {}),
      // Heartbeats (and so cancellations, e.g. of the wait for a request) get through within 2 s.
      maxHeartbeatThrottleInterval: '2 seconds',
      activities: assembled.activities,
      interceptors: { activity: [metrics.interceptor()] },
    });
    workerDone = worker.run().catch((e: unknown) => {
      opts.logger.error('worker stopped with an error; no more workflows or activities run here', {
        error: (e as Error).message,
      });
      opts.onWorkerFailed?.(e as Error);
    });
  }

  let watcher: VirtualClusterWatcher | undefined;
  if (opts.watcher !== false) {
    watcher = new VirtualClusterWatcher({
      host,
      client,
      taskQueue: opts.taskQueue,
      searchAttributes: withSearchAttributes,
      logger: opts.logger.child({ part: 'watcher' }),
      ...(opts.relistIntervalMs ? { relistIntervalMs: opts.relistIntervalMs } : {}),
      ...(opts.watchNamespace ? { namespace: opts.watchNamespace } : {}),
      ...(opts.promotionRetryMs ? { promotionRetryMs: opts.promotionRetryMs } : {}),
    });
    await watcher.start();
    const known = watcher;
    metrics.trackPhases(() => Promise.resolve(known.phases()));
  }
  // Last: nothing after it can fail and leave the pool making slots with no handle to stop it.
  await warmPool?.start();

  return {
    host,
    client,
    ...(runtime ? { runtime } : {}),
    ...(warmPool ? { warmPool } : {}),
    ...(watcher ? { watcher } : {}),
    metrics,
    ...(served ? { metricsUrl: served.url } : {}),
    async stop({ stopTenants = true } = {}) {
      try {
        await served?.close();
        await watcher?.stop();
        await warmPool?.stop();
        if (worker?.getState() === 'RUNNING') worker.shutdown();
        await workerDone;
        await nativeConnection?.close();
        await connection.close();
      } finally {
        if (stopTenants) await runtime?.shutdown();
        else runtime?.detach();
      }
    },
  };
}
