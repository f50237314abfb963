/**
 * A whole kosmos-vc on this machine, for the benchmarks and the conformance run: a Temporal dev
 * server, the embedded host cluster (no kwok nodes; the caller makes its own) and an operator
 * watching `default`, all under one temporary directory that close() removes after stopping
 * everything by PID.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveBinaries, type Binaries } from '../runtime/binaries.js';
import { startEmbeddedHost, startTemporalDevServer, type EmbeddedHost } from '../runtime/embedded.js';
import { PortAllocator } from '../runtime/ports.js';
import { ProcessRuntime } from '../runtime/processRuntime.js';
import type { Logger } from './logger.js';
import { startOperator, type Operator, type OperatorOptions } from './operator.js';

export interface LocalEnvironment {
  root: string;
  binaries: Binaries;
  ports: PortAllocator;
  operator: Operator;
  /** What the operator was started with: another one (a benchmark's) starts from the same. */
  operatorOptions: OperatorOptions;
  host: EmbeddedHost;
  /** The runtime of the host cluster's and Temporal's processes (the benchmarks' baselines). */
  embeddedRuntime: ProcessRuntime;
  close(): Promise<void>;
}

export async function startLocalEnvironment(opts: {
  prefix: string;
  taskQueue: string;
  logger: Logger;
  /** Host and tenant etcds skip fsync (measures kosmos-vc, not the disk). */
  etcdUnsafeNoFsync?: boolean;
  /** Run the host's real node too (pods need real images then); default off: kwok only. */
  realNode?: boolean;
  /** Tenants may ask for spec.podSecurity: privileged (the conformance tenant does). */
  allowPrivilegedTenants?: boolean;
  /** The worker's workflow cache and clusterTree sharing (the bench takes them from the environment). */
  worker?: Pick<OperatorOptions, 'workflowCache' | 'sharedClusterTree' | 'warmPool' | 'oneProcess'>;
}): Promise<LocalEnvironment> {
  const root = await mkdtemp(join(tmpdir(), opts.prefix));
  const binaries = await resolveBinaries();
  const embedded = new ProcessRuntime({ root: join(root, 'embedded'), logger: opts.logger });
  const ports = new PortAllocator(join(root, 'ports.json'));
  const noFsync = opts.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {};
  let operator: Operator | undefined;
  let host: EmbeddedHost | undefined;
  const close = async () => {
    await operator?.stop({ stopTenants: true });
    await host?.stop();
    await embedded.shutdown();
    await rm(root, { recursive: true, force: true });
  };
  try {
    process.stderr.write('starting Temporal dev server, host cluster and operator...\n');
    const [port, httpPort] = (await ports.allocate('temporal', 2)) as [number, number];
    const temporal = await startTemporalDevServer({ runtime: embedded, binaries, port, httpPort });
    host = await startEmbeddedHost({
      dir: join(root, 'host'),
      runtime: embedded,
      binaries,
      ports,
      logger: opts.logger,
      kwokNodes: 0,
      realNode: opts.realNode ?? false,
      ...noFsync,
    });
    const operatorOptions: OperatorOptions = {
      applyCRD: true,
      kubeconfigPath: host.kubeconfigPath,
      temporalAddress: temporal.address,
      temporalNamespace: 'default',
      taskQueue: opts.taskQueue,
      stateDir: join(root, 'operator'),
      logger: opts.logger,
      binaries,
      watchNamespace: 'default',
      ...(opts.allowPrivilegedTenants ? { allowPrivilegedTenants: true } : {}),
      ...opts.worker,
      ...(host.realNode
        ? {
            nodeAddress: host.realNode.layout.nodeIP,
            podCIDR: host.realNode.layout.clusterCIDR,
            ...(binaries.node ? { hostsImage: binaries.node.toolsImage } : {}),
          }
        : {}),
      ...noFsync,
    };
    operator = await startOperator(operatorOptions);
    return { root, binaries, ports, operator, operatorOptions, host, embeddedRuntime: embedded, close };
  } catch (e) {
    await close();
    throw e;
  }
}
