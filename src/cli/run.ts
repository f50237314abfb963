/** The kosmos-vc command line (entry: main.ts, which checks the Node.js version first). */
import { CommanderError } from 'commander';
import { dirname, join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { resolveBinaries } from '../runtime/binaries.js';
import { startEmbeddedHost, startTemporalDevServer } from '../runtime/embedded.js';
import { PortAllocator } from '../runtime/ports.js';
import { ProcessRuntime } from '../runtime/processRuntime.js';
import { defaultStateDir, metricsEndpoint, readOperatorEnv, type OperatorEnv } from '../worker/config.js';
import { createLogger } from '../worker/logger.js';
import { startOperator, type Operator, type PodControlPlane } from '../worker/operator.js';
import { CommandError, describeCommand, getCommand, kubeconfigCommand } from './inspect.js';
import { buildProgram } from './program.js';
import { UsageError, resize } from './resize.js';
import { rotateCA } from './rotateCA.js';
import { backupCommand, restoreCommand } from './backup.js';

const logger = createLogger();

/** A worker that died of a fatal error: stop everything the way Ctrl-C does, then exit 1. */
function onWorkerFailed(): void {
  process.exitCode = 1;
  process.kill(process.pid, 'SIGTERM');
}

/**
 * Runs `start`, and stops cleanly on SIGINT/SIGTERM: a signal during start-up waits for start-up
 * to settle first, so nothing it is still starting is left behind. A second signal exits at once.
 */
/** Where the control-plane pods go (KOSMOS_VC_RUNTIME=kubernetes), from the environment. */
function podPlacement(env: OperatorEnv): PodControlPlane {
  const selector = env.KOSMOS_VC_POD_NODE_SELECTOR;
  return {
    ...(env.KOSMOS_VC_ETCD_STORAGE_CLASS
      ? { etcdStorage: { storageClass: env.KOSMOS_VC_ETCD_STORAGE_CLASS } }
      : {}),
    ...(selector
      ? {
          nodeSelector: Object.fromEntries(
            selector.split(',').map((kv) => kv.split('=') as [string, string]),
          ),
        }
      : {}),
    ...(env.KOSMOS_VC_POD_TOLERATE_ALL === 'true' ? { tolerations: [{ operator: 'Exists' }] } : {}),
    ...(env.KOSMOS_VC_IMAGES ? { images: env.KOSMOS_VC_IMAGES } : {}),
  };
}

/** The operator options every command takes from the environment. */
function operatorOptions(env: OperatorEnv, stateDir: string) {
  const metrics = metricsEndpoint(env.KOSMOS_VC_METRICS_ADDRESS);
  return {
    temporalNamespace: env.TEMPORAL_NAMESPACE,
    taskQueue: env.KOSMOS_VC_TASK_QUEUE,
    stateDir,
    logger,
    onWorkerFailed,
    readinessTimeoutMs: env.KOSMOS_VC_READINESS_TIMEOUT_SECONDS * 1000,
    etcdUnsafeNoFsync: env.KOSMOS_VC_ETCD_UNSAFE_NO_FSYNC,
    ...(env.KOSMOS_VC_WORKFLOW_CACHE !== undefined ? { workflowCache: env.KOSMOS_VC_WORKFLOW_CACHE } : {}),
    sharedClusterTree: env.KOSMOS_VC_CLUSTERTREE === 'shared',
    ...(env.KOSMOS_VC_WARM_POOL > 0 ? { warmPool: { size: env.KOSMOS_VC_WARM_POOL } } : {}),
    ...(env.KOSMOS_VC_ONE_PROCESS !== undefined ? { oneProcess: env.KOSMOS_VC_ONE_PROCESS } : {}),
    ...(env.KOSMOS_VC_WATCH_NAMESPACE ? { watchNamespace: env.KOSMOS_VC_WATCH_NAMESPACE } : {}),
    ...(env.KOSMOS_VC_NODE_ADDRESS ? { nodeAddress: env.KOSMOS_VC_NODE_ADDRESS } : {}),
    ...(env.KOSMOS_VC_POD_CIDR ? { podCIDR: env.KOSMOS_VC_POD_CIDR } : {}),
    ...(env.KOSMOS_VC_ALLOW_PRIVILEGED_TENANTS ? { allowPrivilegedTenants: true } : {}),
    ...(env.KOSMOS_VC_OPERATOR_NAMESPACE ? { operatorNamespace: env.KOSMOS_VC_OPERATOR_NAMESPACE } : {}),
    ...(env.KOSMOS_VC_EXPOSE_TYPES ? { exposeTypes: env.KOSMOS_VC_EXPOSE_TYPES } : {}),
    ...(env.KOSMOS_VC_HOSTS_IMAGE ? { hostsImage: env.KOSMOS_VC_HOSTS_IMAGE } : {}),
    ...(env.KOSMOS_VC_BACKUP_DIR ? { backupDir: env.KOSMOS_VC_BACKUP_DIR } : {}),
    ...(metrics ? { metrics } : {}),
    ...(env.KOSMOS_VC_RUNTIME === 'kubernetes' ? { pods: podPlacement(env) } : {}),
  };
}

async function supervise(start: () => Promise<void>, stop: () => Promise<void>): Promise<void> {
  let stopping: Promise<void> | undefined;
  const startup = start();
  const stopOnce = (): Promise<void> => {
    stopping ??= startup.catch(() => undefined).then(stop);
    return stopping;
  };
  const handler = (sig: NodeJS.Signals) => {
    if (stopping) {
      logger.warn('second signal: exiting now', { signal: sig });
      process.exit(130);
    }
    logger.info('stopping (Ctrl-C again to force)', { signal: sig });
    stopOnce().then(
      () => process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0),
      (e: unknown) => {
        logger.error('stop failed', { error: (e as Error).message });
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  try {
    await startup;
  } catch (e) {
    if (stopping) return; // the signal handler owns the exit
    logger.error(`start-up failed: ${(e as Error).message}; stopping what was started`);
    await stopOnce().catch(() => undefined);
    process.exit(1);
  }
}

async function up(): Promise<void> {
  const env = readOperatorEnv();
  const stateDir = env.KOSMOS_VC_STATE_DIR ?? defaultStateDir();
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const binaries = await resolveBinaries();
  const embedded = new ProcessRuntime({
    root: join(stateDir, 'embedded'),
    logger: logger.child({ part: 'embedded' }),
  });
  const ports = new PortAllocator(join(stateDir, 'ports.json'));
  let operator: Operator | undefined;
  let stopHost = (): Promise<void> => Promise.resolve();
  let nodeAddress = env.KOSMOS_VC_NODE_ADDRESS;
  let podCIDR = env.KOSMOS_VC_POD_CIDR;
  let hostsImage = env.KOSMOS_VC_HOSTS_IMAGE;
  let realNodeName: string | undefined;

  const start = async (): Promise<void> => {
    let kubeconfig = env.KUBECONFIG;
    if (!kubeconfig) {
      logger.info('no KUBECONFIG: starting the embedded host cluster', { stateDir });
      const host = await startEmbeddedHost({
        dir: join(stateDir, 'host'),
        runtime: embedded,
        binaries,
        ports,
        logger,
        kwokNodes: 3,
        realNode: env.KOSMOS_VC_REAL_NODE,
      });
      stopHost = () => host.stop();
      kubeconfig = host.kubeconfigPath;
      if (host.realNode) {
        realNodeName = host.realNode.name;
        nodeAddress ??= host.realNode.layout.nodeIP;
        podCIDR ??= host.realNode.layout.clusterCIDR;
        hostsImage ??= binaries.node?.toolsImage;
      }
    }
    let temporalAddress = env.TEMPORAL_ADDRESS;
    let uiUrl: string | undefined;
    if (!temporalAddress) {
      const port = Number(process.env.KOSMOS_VC_TEMPORAL_PORT ?? 7233);
      const uiPort = Number(process.env.KOSMOS_VC_TEMPORAL_UI_PORT ?? 8233);
      logger.info('no TEMPORAL_ADDRESS: starting the Temporal dev server', { port, uiPort });
      await mkdir(join(stateDir, 'temporal'), { recursive: true });
      const t = await startTemporalDevServer({
        runtime: embedded,
        binaries,
        port,
        uiPort,
        httpPort: port + 10,
        dbFile: join(stateDir, 'temporal', 'temporal.db'),
      });
      temporalAddress = t.address;
      uiUrl = t.uiUrl;
    }

    const options = operatorOptions(env, stateDir);
    if (options.pods && !env.KUBECONFIG && !realNodeName)
      throw new Error(
        'KOSMOS_VC_RUNTIME=kubernetes needs a node that runs pods: the embedded host has no real node here ' +
          '(KOSMOS_VC_REAL_NODE=false, or the machine cannot run one: see the log above)',
      );
    operator = await startOperator({
      ...options,
      // The embedded host's simulated nodes run nothing: control-plane pods go to the real node,
      // whatever a tenant's promotion put on it.
      // (Unless the environment says otherwise: a `worker` beside it takes the same variables.)
      ...(options.pods && realNodeName
        ? {
            pods: {
              nodeSelector: { 'kubernetes.io/hostname': realNodeName },
              ...(env.KOSMOS_VC_POD_TOLERATE_ALL !== 'false'
                ? { tolerations: [{ operator: 'Exists' }] }
                : {}),
              ...options.pods,
            },
          }
        : {}),
      applyCRD: true,
      ...(nodeAddress ? { nodeAddress } : {}),
      ...(podCIDR ? { podCIDR } : {}),
      ...(hostsImage ? { hostsImage } : {}),
      kubeconfigPath: kubeconfig,
      temporalAddress,
      binaries,
    });

    const lines = [
      '',
      'kosmos-vc is up. Ctrl-C stops everything; `npm start` again brings it all back.',
      '',
      `  host cluster:    export KUBECONFIG=${kubeconfig}`,
      `  kubectl:         export PATH=${dirname(binaries.kubectl)}:$PATH`,
      `  Temporal:        ${temporalAddress} (namespace ${env.TEMPORAL_NAMESPACE})`,
      ...(uiUrl ? [`  Temporal Web UI: ${uiUrl}`] : []),
      ...(operator.metricsUrl ? [`  metrics:         ${operator.metricsUrl}`] : []),
      `  state:           ${stateDir}`,
      '',
      '  first tenant:    kubectl apply -f examples/tenant1.yaml && kubectl get vc -w',
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
  };

  await supervise(start, async () => {
    await operator?.stop({ stopTenants: true });
    await stopHost();
    await embedded.shutdown();
  });
}

async function worker(): Promise<void> {
  const env = readOperatorEnv();
  const { KUBECONFIG: kubeconfigPath, TEMPORAL_ADDRESS: temporalAddress } = env;
  // In a pod (the chart) without KUBECONFIG: the cluster it runs in, as its service account.
  const inCluster = !kubeconfigPath && process.env.KUBERNETES_SERVICE_HOST !== undefined;
  if ((!kubeconfigPath && !inCluster) || !temporalAddress)
    throw new Error('kosmos-vc worker needs KUBECONFIG (unless it runs in a pod) and TEMPORAL_ADDRESS');
  const stateDir = env.KOSMOS_VC_STATE_DIR ?? defaultStateDir();
  let operator: Operator | undefined;
  await supervise(
    async () => {
      operator = await startOperator({
        ...operatorOptions(env, stateDir),
        ...(kubeconfigPath ? { kubeconfigPath } : {}),
        temporalAddress,
        watcher: env.KOSMOS_VC_WATCHER,
      });
      logger.info('worker running', { taskQueue: env.KOSMOS_VC_TASK_QUEUE, stateDir });
    },
    async () => operator?.stop({ stopTenants: !env.KOSMOS_VC_KEEP_TENANTS }),
  );
}

const write = (text: string) => process.stdout.write(text + '\n');

// One-shot commands exit when done: the API client's kept-alive connections would hold the process.
// Output to a pipe is written asynchronously: exit once it is all out.
const once =
  <T>(run: (o: T) => Promise<number | void>) =>
  async (o: T): Promise<void> => {
    const code = (await run(o)) ?? 0;
    await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
    process.exit(code);
  };

const program = buildProgram(
  {
    up,
    worker,
    resize: once((r) => resize(r, process.env.KUBECONFIG, write)),
    get: once((o) => getCommand(o, write)),
    describe: once((o) => describeCommand(o, write)),
    kubeconfig: once((o) => kubeconfigCommand(o, write)),
    rotateCA: once((o) => rotateCA(o, write)),
    backup: once((o) => backupCommand(o, write)),
    restore: once((o) => restoreCommand(o, write)),
  },
  { exitOverride: true },
);
// No command at all is `up` (what `npm start` has always run).
const argv = process.argv.length > 2 ? process.argv : [...process.argv, 'up'];
(async () => program.parseAsync(argv))().catch((e: unknown) => {
  // Help asked for: exit 0; a usage problem (commander's, said already, or ours): exit 2.
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  if (e instanceof UsageError || e instanceof CommandError) {
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(e instanceof UsageError ? 2 : 1);
  }
  // The long-running commands log; the one-shot ones say it as a command line tool does.
  if (['up', 'worker'].includes(argv[2] ?? '')) logger.error((e as Error).message);
  else process.stderr.write(`error: ${(e as Error).message}\n`);
  process.exit(1);
});
