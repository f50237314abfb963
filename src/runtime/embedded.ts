/**
 * The embedded default: a local host cluster (etcd, kube-apiserver, kube-controller-manager,
 * kube-scheduler, kwok nodes) and a Temporal dev server with its Web UI, run as supervised
 * processes. `kosmos-vc up` uses it when no KUBECONFIG / TEMPORAL_ADDRESS is given; the
 * integration tests use it as their host.
 */
import { CoreV1Api, KubeConfig, type V1Node } from '@kubernetes/client-node';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { errorText, reuseConnections } from '../api/kubeClient.js';
import { KWOK_NODE_ANNOTATION } from '../clustertree/naming.js';
import {
  realNodeHeldElsewhere,
  realNodeUnavailable,
  startRealNode,
  NodeNet,
  type RealNode,
} from '../node/realNode.js';
import { guardRanges } from '../node/network.js';
import { loadPair, PkiFile, writeControlPlanePki } from '../pki/controlPlanePki.js';
import { searchAttributes } from '../workflows/definitions.js';
import type { Logger } from '../worker/logger.js';
import type { Binaries } from './binaries.js';
import { ensureDnsService, startClusterDns } from './dns.js';
import {
  apiserverSpec,
  apiserverURL,
  controllerManagerSpec,
  etcdSpec,
  kubeconfigPath,
  pkiDir,
  placeOnMachine,
  schedulerSpec,
  type ControlPlaneLayout,
} from './controlPlane.js';
import { writeKubeconfigs } from './kubeconfigs.js';
import type { PortAllocator } from './ports.js';
import { removeLocalStorageClass, startLocalStorage } from './storage.js';
import { startAndWait, type ComponentSpec, type ControlPlaneRuntime } from './types.js';

export const HOST_ID = 'host';
export const KWOK_ANNOTATION = KWOK_NODE_ANNOTATION;

export interface EmbeddedHostOptions {
  dir: string;
  runtime: ControlPlaneRuntime;
  binaries: Binaries;
  ports: PortAllocator;
  logger: Logger;
  kwokNodes: number;
  /** Also run a real node (containerd, kubelet, kube-proxy) where the machine allows; default true. */
  realNode?: boolean;
  etcdUnsafeNoFsync?: boolean;
  readinessTimeoutMs?: number;
}

export interface EmbeddedHost {
  kubeconfigPath: string;
  layout: ControlPlaneLayout;
  /** kwok nodes, then the real node if one runs. */
  nodeNames: string[];
  realNode?: RealNode;
  /** The host's DNS Service address (kube-system/kube-dns), served where a real node runs. */
  clusterDNS: string;
  /**
   * Stops what needs more than a signal: the real node's pods and network, or, without a real
   * node, the guard routes this host added.
   */
  stop(): Promise<void>;
}

/** kube-system/kube-dns, as kubeadm places it: the tenth address of the Service range. */
export const HOST_CLUSTER_DNS = '10.96.0.10';

/** Starts (or re-attaches to) the embedded host cluster and makes sure its kwok nodes exist. */
export async function startEmbeddedHost(opts: EmbeddedHostOptions): Promise<EmbeddedHost> {
  const timeout = opts.readinessTimeoutMs ?? 90_000;
  const [etcdClient, etcdPeer, apiserver, controllerManager, scheduler] = (await opts.ports.allocate(
    HOST_ID,
    5,
  )) as [number, number, number, number, number];
  // Where a real node can run (its guard then keeps the API server's port to loopback and the
  // bridge), host pods reach the API server on the node's address; elsewhere, and where another
  // host on this machine has the node (its guard does not cover this host), it stays on loopback.
  const heldElsewhere =
    (opts.realNode ?? true) ? await realNodeHeldElsewhere(join(opts.dir, 'node')) : undefined;
  const nodeLikely =
    (opts.realNode ?? true) && !(await realNodeUnavailable(opts.binaries.node)) && !heldElsewhere;
  const layout: ControlPlaneLayout = {
    id: HOST_ID,
    dir: opts.dir,
    address: '127.0.0.1',
    ports: { etcdClient, etcdPeer, apiserver, controllerManager, scheduler },
    serviceCIDR: '10.96.0.0/12',
    // Its nodes have kubelets (kwok's, the real node's): its controller-manager judges them.
    judgesNodes: true,
    ...(opts.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {}),
    // With a real node, host pods (clusterTree's, an in-cluster operator: ADR 14) reach the API
    // server as in any cluster, through `kubernetes.default` to the node's address on the
    // bridge. It listens on every address as tenants' do; the node's guard keeps its port to
    // loopback and the bridge.
    ...(nodeLikely ? { bindAddress: '0.0.0.0', advertiseAddress: NodeNet.nodeIP } : {}),
  };
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  await writeControlPlanePki(pkiDir(layout), {
    clusterName: 'kosmos-vc-host',
    serviceCIDR: layout.serviceCIDR,
    advertiseAddress: layout.advertiseAddress ?? layout.address,
  });
  await writeKubeconfigs(layout);
  const log = opts.logger.child({ cluster: 'host' });
  await startAndWait(opts.runtime, etcdSpec(placeOnMachine(layout), opts.binaries), timeout, log);
  await startAndWait(opts.runtime, apiserverSpec(placeOnMachine(layout), opts.binaries), timeout, log);
  await startAndWait(
    opts.runtime,
    controllerManagerSpec(placeOnMachine(layout), opts.binaries),
    timeout,
    log,
  );
  await startAndWait(opts.runtime, schedulerSpec(placeOnMachine(layout), opts.binaries), timeout, log);

  const admin = kubeconfigPath(layout, 'admin');
  const stages = [
    'node/fast/node-initialize.yaml',
    'node/heartbeat-with-lease/node-heartbeat-with-lease.yaml',
    'pod/fast/pod-ready.yaml',
    'pod/fast/pod-complete.yaml',
    'pod/fast/pod-delete.yaml',
  ];
  await opts.runtime.ensure({
    owner: HOST_ID,
    name: 'kwok',
    command: opts.binaries.kwok,
    args: [
      `--kubeconfig=${admin}`,
      `--manage-nodes-with-annotation-selector=${KWOK_ANNOTATION}=fake`,
      // Simulated pod IPs in a range the real node blackholes: Service traffic to them stays here.
      `--cidr=${NodeNet.kwokPodCIDR}`,
      ...stages.map((s) => `--config=${join(opts.binaries.kwokStagesDir, s)}`),
      '--node-lease-duration-seconds=40',
    ],
  });
  const nodeNames = await ensureKwokNodes(admin, opts.kwokNodes);
  const host: EmbeddedHost = {
    kubeconfigPath: admin,
    layout,
    nodeNames,
    clusterDNS: HOST_CLUSTER_DNS,
    stop: () => Promise.resolve(),
  };
  // (Not tried where another host held it when the API server's address was chosen: were it free
  // by now, this host's API server would still be on loopback, out of its pods' reach.)
  if (heldElsewhere)
    opts.logger.warn(`no real node: this machine's real node belongs to ${heldElsewhere}; kwok nodes only`);
  else if (opts.realNode ?? true) {
    const ca = await loadPair(pkiDir(layout), PkiFile.ca);
    const realNode = await startRealNode({
      dir: join(opts.dir, 'node'),
      runtime: opts.runtime,
      binaries: opts.binaries.node,
      ports: opts.ports,
      logger: opts.logger,
      host: { server: apiserverURL(layout), ca },
      serviceCIDR: layout.serviceCIDR,
      clusterDNS: HOST_CLUSTER_DNS,
      readinessTimeoutMs: timeout,
    });
    if (realNode) {
      host.realNode = realNode;
      host.nodeNames = [...nodeNames, realNode.name];
      host.stop = () => realNode.stop();
      try {
        await startHostDns(opts, layout, ca, admin, timeout, log);
        const provisioner = opts.binaries.node?.localPathProvisioner;
        if (provisioner)
          // A host without volumes still serves everything else: a failure here is a warning.
          await startLocalStorage({
            runtime: opts.runtime,
            owner: HOST_ID,
            binary: provisioner,
            kubeconfig: admin,
            dir: join(opts.dir, 'storage'),
            node: realNode.name,
            helperImage: opts.binaries.node!.toolsImage,
            logger: log,
          }).catch(async (e: unknown) => {
            log.warn('local storage not started: the host has no StorageClass', { error: errorText(e) });
            await removeLocalStorageClass(admin).catch(() => undefined);
          });
        else {
          log.warn('no local-path-provisioner (npm run setup builds it): the host has no StorageClass');
          await removeLocalStorageClass(admin).catch(() => undefined);
        }
      } catch (e) {
        // The caller never gets `stop` for a host that failed to start: stop the node here.
        await realNode.stop().catch(() => undefined);
        throw e;
      }
    }
  }
  if (!host.realNode) {
    // No real node routes the Service range and kwok's pod IPs to its bridge: kept here all the same.
    const guard = await guardRanges(
      [
        { type: 'unreachable', prefix: layout.serviceCIDR },
        { type: 'blackhole', prefix: NodeNet.kwokPodCIDR },
      ],
      (message) => log.warn(message),
    );
    host.stop = () => guard.remove();
  }
  log.info('host cluster ready', { kubeconfigPath: admin, nodes: host.nodeNames.length });
  return host;
}

/** The host's CoreDNS on the real node's address, behind kube-system/kube-dns. */
async function startHostDns(
  opts: EmbeddedHostOptions,
  layout: ControlPlaneLayout,
  ca: Awaited<ReturnType<typeof loadPair>>,
  admin: string,
  timeoutMs: number,
  log: Logger,
): Promise<void> {
  const kc = reuseConnections(new KubeConfig());
  kc.loadFromFile(admin);
  const port = await startClusterDns({
    runtime: opts.runtime,
    ports: opts.ports,
    portOwner: `${HOST_ID}-dns`,
    owner: HOST_ID,
    dir: join(opts.dir, 'dns'),
    bind: NodeNet.nodeIP,
    kc,
    server: apiserverURL(layout),
    ca,
    coredns: opts.binaries.coredns,
    timeoutMs,
    logger: log,
  });
  await ensureDnsService(kc, {
    namespace: 'kube-system',
    name: 'kube-dns',
    clusterIP: HOST_CLUSTER_DNS,
    address: NodeNet.nodeIP,
    port,
  });
}

/**
 * A Node object kwok manages (its stages make it Ready and keep its Lease fresh): linux/amd64
 * with the given capacity (also its allocatable) and extra labels.
 */
export function kwokNode(
  name: string,
  opts: { capacity: Record<string, string>; labels?: Record<string, string> },
): V1Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      annotations: { [KWOK_ANNOTATION]: 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        ...opts.labels,
      },
    },
    status: {
      allocatable: opts.capacity,
      capacity: opts.capacity,
      nodeInfo: {
        architecture: 'amd64',
        operatingSystem: 'linux',
        kubeletVersion: 'fake',
        kubeProxyVersion: 'fake',
        bootID: '',
        containerRuntimeVersion: '',
        kernelVersion: '',
        machineID: '',
        osImage: '',
        systemUUID: '',
      },
    },
  };
}

/** Creates kwok-node-0..N-1 unless they exist. */
export async function ensureKwokNodes(kubeconfig: string, count: number): Promise<string[]> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  const existing = new Set((await core.listNode()).items.map((n) => n.metadata?.name));
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = `kwok-node-${i}`;
    names.push(name);
    if (existing.has(name)) continue;
    const node = kwokNode(name, {
      labels: { 'node.kubernetes.io/instance-type': 'kwok', type: 'kwok' },
      capacity: { cpu: '32', memory: '256Gi', pods: '110' },
    });
    await core.createNode({ body: node });
  }
  return names;
}

export interface TemporalDevServerOptions {
  runtime: ControlPlaneRuntime;
  binaries: Binaries;
  port: number;
  /** Web UI port; undefined runs headless. */
  uiPort?: number;
  httpPort: number;
  /** SQLite file; undefined keeps everything in memory. */
  dbFile?: string;
  /** Extra dynamic config, e.g. a low continue-as-new threshold for tests. */
  dynamicConfig?: Record<string, string | number>;
  readinessTimeoutMs?: number;
}

export const TEMPORAL_OWNER = 'temporal';

/** Starts (or re-attaches to) a Temporal CLI dev server with kosmos-vc's search attributes. */
export async function startTemporalDevServer(
  opts: TemporalDevServerOptions,
): Promise<{ address: string; uiUrl?: string }> {
  const spec: ComponentSpec = {
    owner: TEMPORAL_OWNER,
    name: 'temporal',
    command: opts.binaries.temporal,
    args: [
      'server',
      'start-dev',
      '--ip=127.0.0.1',
      `--port=${opts.port}`,
      `--http-port=${opts.httpPort}`,
      '--namespace=default',
      ...(opts.uiPort ? [`--ui-port=${opts.uiPort}`, '--ui-ip=127.0.0.1'] : ['--headless']),
      ...(opts.dbFile ? [`--db-filename=${opts.dbFile}`] : []),
      ...Object.values(searchAttributes).map((k) => `--search-attribute=${k.name}=Keyword`),
      '--dynamic-config-value=frontend.enableServerVersionCheck=false',
      // A step's activity task comes back with the workflow task that scheduled it, to the worker
      // that ran that (the SDK asks for it by default; the server only gives it with this flag):
      // one trip through the task queue less per step (ADR 12).
      '--dynamic-config-value=system.enableActivityEagerExecution=true',
      ...Object.entries(opts.dynamicConfig ?? {}).map(
        ([k, v]) => `--dynamic-config-value=${k}=${JSON.stringify(v)}`,
      ),
      '--log-level=warn',
    ],
    probe: { url: `http://127.0.0.1:${opts.httpPort}/api/v1/namespaces/default` },
  };
  await opts.runtime.ensure(spec);
  await opts.runtime.waitReady(spec.owner, spec.name, opts.readinessTimeoutMs ?? 60_000);
  return {
    address: `127.0.0.1:${opts.port}`,
    ...(opts.uiPort ? { uiUrl: `http://127.0.0.1:${opts.uiPort}` } : {}),
  };
}
