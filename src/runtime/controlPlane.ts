/**
 * The components of one Kubernetes control plane (etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler) as ComponentSpecs, and where they find their files
 * (their kubeconfigs: kubeconfigs.ts). Used for every tenant and for the embedded host cluster alike.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { certPath, keyPath, PkiFile, ServiceAccountKey, type PkiName } from '../pki/controlPlanePki.js';
import type { Binaries } from './binaries.js';
import type { ComponentSpec, FileSet, HttpsProbe } from './types.js';

export type ControlPlanePorts = Record<
  'etcdClient' | 'etcdPeer' | 'apiserver' | 'controllerManager' | 'scheduler',
  number
>;

export interface ControlPlaneLayout {
  /** Runtime owner id and etcd member name. */
  id: string;
  /** Root directory; everything the control plane keeps lives below it. */
  dir: string;
  address: string;
  /** Where the API server listens, when not only on `address` (e.g. 0.0.0.0 for pods to reach it). */
  bindAddress?: string;
  /**
   * Where pods reach the API server (the node address), when they can: it is then the endpoint of
   * the cluster's `default/kubernetes` Service, kept by the API server as in any cluster.
   */
  advertiseAddress?: string;
  ports: ControlPlanePorts;
  serviceCIDR: string;
  /** Test-only: etcd skips fsync. */
  etcdUnsafeNoFsync?: boolean;
  /** Log requests of users and workloads (not the control plane's own) to <dir>/audit: idle detection. */
  auditLog?: boolean;
  /**
   * The controller-manager judges its nodes' health (the node-lifecycle controller: Leases, the
   * taints of a node's conditions, evictions): the host's, whose nodes have kubelets. A tenant's
   * nodes are clusterTree's, whose health is their host node's, copied (ADR 12, decision 19).
   */
  judgesNodes?: boolean;
}

export const auditDir = (l: ControlPlaneLayout): string => join(l.dir, 'audit');
export const auditLogPath = (l: ControlPlaneLayout): string => join(auditDir(l), 'audit.log');

/**
 * What counts as a request to the tenant: anything but the control plane's own components,
 * clusterTree, CoreDNS, kube-system's controllers and health checks. One line per request
 * (Metadata level, when the response is complete or a watch starts).
 */
export const AUDIT_POLICY = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users:
      - system:apiserver
      - system:kube-controller-manager
      - system:kube-scheduler
      - system:kube-proxy
      - kosmos-vc:clustertree
      - kosmos-vc:coredns
      - kosmos-vc:operator
  - level: None
    userGroups: [system:nodes, "system:serviceaccounts:kube-system"]
  - level: None
    nonResourceURLs: [/healthz*, /readyz*, /livez*, /version, /metrics]
  - level: Metadata
`;

/** Writes the audit policy an apiserver with auditLog reads. */
export async function writeAuditPolicy(l: ControlPlaneLayout): Promise<void> {
  await mkdir(auditDir(l), { recursive: true, mode: 0o700 });
  await writeFile(join(auditDir(l), 'policy.yaml'), AUDIT_POLICY);
}

export const pkiDir = (l: ControlPlaneLayout): string => join(l.dir, 'pki');
export const etcdDataDir = (l: ControlPlaneLayout): string => join(l.dir, 'etcd');
export type KubeconfigUser = 'admin' | 'operator' | 'controller-manager' | 'scheduler';
export const kubeconfigPath = (l: ControlPlaneLayout, who: KubeconfigUser): string =>
  join(l.dir, 'kubeconfigs', `${who}.conf`);

export const apiserverURL = (l: ControlPlaneLayout): string => `https://${l.address}:${l.ports.apiserver}`;

/**
 * Where a control plane's components find their files and one another (ADR 14). The spec
 * builders below take nothing else, so one builder serves every runtime: the process runtime's
 * placement (placeOnMachine) is the state directory and ports of this machine; a runtime of pods
 * places the files where it mounts them and reaches components through Services.
 */
export interface Placement {
  /** Runtime owner id, etcd member and the kubeconfigs' cluster name. */
  id: string;
  serviceCIDR: string;
  /** As the components see them: the certificate set, the kubeconfigs, etcd's data, the audit policy and log. */
  paths: { pki: string; kubeconfigs: string; etcdData: string; auditPolicy: string; auditLog: string };
  /** The address each component listens on. */
  listen: Record<'etcd' | 'apiserver' | 'controllerManager' | 'scheduler', string>;
  ports: ControlPlanePorts;
  /** Where the API server and etcd's peers reach etcd. */
  etcdHost: string;
  /** Where the controller-manager, the scheduler and the kubeconfigs reach the API server. */
  apiserverURL: string;
  /** The API server's advertised address; `endpoint`: it is the `kubernetes` Service's endpoint. */
  advertise: { address: string; endpoint: boolean };
  /** Where the runtime probes the components from, with which copy of the certificate set. */
  probe: { host: string; pki: string };
  etcdUnsafeNoFsync?: boolean;
  auditLog?: boolean;
  /** ControlPlaneLayout.judgesNodes. */
  judgesNodes?: boolean;
  /** As pods of a host namespace (placeInHost): the namespace, the Services, etcd's health port. */
  pod?: PodPlacement;
}

export interface PodPlacement {
  namespace: string;
  /** etcd's headless Service: its clients and peer reach the pod by this name. */
  etcdService: string;
  /** The API server's Service (the tenant's `kosmos-apiserver`) and its port. */
  apiService: string;
  apiServicePort: number;
  /** etcd's plain-HTTP /livez and /readyz, for the kubelet (its client port asks for a certificate). */
  etcdHealthPort: number;
}

/** The programs a control plane runs: paths of this machine (Binaries), or in the images. */
export type ControlPlanePrograms = Pick<
  Binaries,
  'etcd' | 'kubeApiserver' | 'kubeControllerManager' | 'kubeScheduler'
>;

/** Where the control-plane images setup builds keep their binary (one static binary each). */
export const IMAGE_PROGRAMS: ControlPlanePrograms = {
  etcd: '/usr/local/bin/etcd',
  kubeApiserver: '/usr/local/bin/kube-apiserver',
  kubeControllerManager: '/usr/local/bin/kube-controller-manager',
  kubeScheduler: '/usr/local/bin/kube-scheduler',
};

/** The ports of a control plane in pods: upstream's, since every component has its own address. */
export const POD_PORTS: ControlPlanePorts = {
  etcdClient: 2379,
  etcdPeer: 2380,
  apiserver: 6443,
  controllerManager: 10257,
  scheduler: 10259,
};

/** Where a runtime of pods mounts the files (etc/kosmos-vc/<source>) and keeps etcd's data. */
export const POD_PATHS = {
  pki: '/etc/kosmos-vc/pki',
  kubeconfigs: '/etc/kosmos-vc/kubeconfigs',
  auditPolicy: '/etc/kosmos-vc/audit-policy/policy.yaml',
  auditLog: '/var/log/kosmos-vc/audit/audit.log',
  etcdData: '/var/lib/etcd/data',
} as const;

export const ETCD_SERVICE = 'etcd';
/** clusterTree's Service in a tenant's host namespace: its kubelet endpoint, which the API server calls. */
export const CLUSTERTREE_SERVICE = 'clustertree';

/**
 * The DNS names a tenant's certificates need for its control plane in pods of `namespace`:
 * etcd's (its serving certificate), the API server's Service (the components' kubeconfigs) and
 * clusterTree's (the kubelet endpoint of the tenant's nodes).
 */
export function podSANs(
  namespace: string,
  apiService: string,
): { etcd: string[]; apiserver: string[]; clusterTree: string[] } {
  const names = (svc: string) => [`${svc}.${namespace}.svc`, `${svc}.${namespace}.svc.cluster.local`];
  return { etcd: names(ETCD_SERVICE), apiserver: names(apiService), clusterTree: names(CLUSTERTREE_SERVICE) };
}

/**
 * The kubernetes runtime's placement (ADR 14): the files where the pods mount them, every
 * component on its own pod address with upstream's ports, etcd and the API server reached through
 * their Services. The runtime probes each pod at its address as `localhost` (a name every
 * serving certificate of the set carries), with the operator's copy in `probePki`.
 */
export function placeInHost(i: {
  id: string;
  namespace: string;
  serviceCIDR: string;
  apiService: string;
  /**
   * The API server Service's ClusterIP: advertised, it is the tenant's `kubernetes` endpoint (on
   * the API server's own port, which the Service carries too). Without it, no endpoint.
   */
  address?: string;
  probePki: string;
  etcdUnsafeNoFsync?: boolean;
}): Placement {
  const pod: PodPlacement = {
    namespace: i.namespace,
    etcdService: ETCD_SERVICE,
    apiService: i.apiService,
    apiServicePort: 443,
    etcdHealthPort: 2381,
  };
  const any = '0.0.0.0';
  return {
    id: i.id,
    serviceCIDR: i.serviceCIDR,
    paths: { ...POD_PATHS },
    listen: { etcd: any, apiserver: any, controllerManager: any, scheduler: any },
    ports: POD_PORTS,
    etcdHost: `${ETCD_SERVICE}.${i.namespace}.svc`,
    apiserverURL: `https://${i.apiService}.${i.namespace}.svc:${pod.apiServicePort}`,
    // The Service's address, as the endpoint of the tenant's `kubernetes`, where pods reach it;
    // else the pod's address, expanded by the kubelet from the environment the runtime sets.
    advertise: i.address ? { address: i.address, endpoint: true } : { address: '$(POD_IP)', endpoint: false },
    probe: { host: 'localhost', pki: i.probePki },
    pod,
    ...(i.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {}),
  };
}

/** The process runtime's placement: everything on this machine, under the layout's directory. */
export function placeOnMachine(l: ControlPlaneLayout): Placement {
  return {
    id: l.id,
    serviceCIDR: l.serviceCIDR,
    paths: {
      pki: pkiDir(l),
      kubeconfigs: join(l.dir, 'kubeconfigs'),
      etcdData: etcdDataDir(l),
      auditPolicy: join(auditDir(l), 'policy.yaml'),
      auditLog: auditLogPath(l),
    },
    listen: {
      etcd: l.address,
      apiserver: l.bindAddress ?? l.address,
      controllerManager: l.address,
      scheduler: l.address,
    },
    ports: l.ports,
    etcdHost: l.address,
    apiserverURL: apiserverURL(l),
    // A loopback address is no valid endpoint: where pods cannot reach the API server, none.
    advertise: { address: l.advertiseAddress ?? l.address, endpoint: l.advertiseAddress !== undefined },
    probe: { host: l.address, pki: pkiDir(l) },
    ...(l.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {}),
    ...(l.auditLog ? { auditLog: true } : {}),
    ...(l.judgesNodes ? { judgesNodes: true } : {}),
  };
}

/**
 * The files a component's arguments name, collected as they are named: its `files` are then
 * exactly what it reads (a runtime of pods mounts those keys and nothing else).
 */
function reads(p: Placement) {
  type Source = Exclude<FileSet['source'], 'clustertree' | 'coredns'>;
  const used = new Map<Source, Set<string>>();
  const dirs: Record<Source, string> = {
    pki: p.paths.pki,
    kubeconfigs: p.paths.kubeconfigs,
    'audit-policy': dirname(p.paths.auditPolicy),
  };
  const file = (source: Source, key: string): string => {
    used.set(source, (used.get(source) ?? new Set()).add(key));
    return join(dirs[source], key);
  };
  return {
    cert: (name: PkiName) => file('pki', `${name}.crt`),
    key: (name: PkiName) => file('pki', `${name}.key`),
    pki: (key: string) => file('pki', key),
    pair: (name: PkiName, certFlag: string, keyFlag: string): string[] => [
      `--${certFlag}=${file('pki', `${name}.crt`)}`,
      `--${keyFlag}=${file('pki', `${name}.key`)}`,
    ],
    kubeconfig: (who: KubeconfigUser) => file('kubeconfigs', `${who}.conf`),
    /** reloadingKubeconfig's file, and the certificate files it names. */
    reloadingKubeconfig: (who: ReloadingUser) => {
      for (const f of [`${PkiFile.ca}.crt`, `${RELOADING[who]}.crt`, `${RELOADING[who]}.key`]) file('pki', f);
      return file('kubeconfigs', reloadingKubeconfigName(who));
    },
    auditPolicy: () => file('audit-policy', basename(p.paths.auditPolicy)),
    files: (): FileSet[] =>
      [...used].map(([source, keys]) => ({ source, path: dirs[source], keys: [...keys].sort() })),
  };
}

/** The runtime's probe of a component: from `p.probe.host`, trusting `ca` of the operator's copy. */
function probeOf(p: Placement, port: number, path: string, ca: PkiName, client?: PkiName): HttpsProbe {
  return {
    url: `https://${p.probe.host}:${port}${path}`,
    caFile: certPath(p.probe.pki, ca),
    ...(client ? { certFile: certPath(p.probe.pki, client), keyFile: keyPath(p.probe.pki, client) } : {}),
  };
}

/**
 * The Go garbage collector's target for etcd and kube-apiserver: a heap may grow 25 % over the
 * live data before a collection (Go's default is 100 %). An idle tenant apiserver holds ~90 MiB
 * live and kept ~200 MiB of anonymous memory at the default; this keeps it near 130 MiB for a
 * few collections more under load. The controller-manager and scheduler gained nothing
 * measurable and keep the default as processes of their own; in one process (oneProcessSpec)
 * all three start at the default and take this once started (docs/adr/0012-tenant-density-and-speed.md).
 */
export const LEAN_GC: Readonly<Record<string, string>> = { GOGC: '25' };

/**
 * How long after its API server is ready (and the others started) kube-control-plane sets
 * LEAN_GC's target for all three components (KOSMOS_VC_GOGC_SETTLE_AFTER): what measures it idle
 * waits this.
 */
export const ONE_PROCESS_SETTLES_MS = 30_000;

export function etcdSpec(p: Placement, b: ControlPlanePrograms): ComponentSpec {
  const f = reads(p);
  const listenClient = `https://${p.listen.etcd}:${p.ports.etcdClient}`;
  const listenPeer = `https://${p.listen.etcd}:${p.ports.etcdPeer}`;
  const client = `https://${p.etcdHost}:${p.ports.etcdClient}`;
  const peer = `https://${p.etcdHost}:${p.ports.etcdPeer}`;
  return {
    owner: p.id,
    name: 'etcd',
    command: b.etcd,
    env: LEAN_GC,
    args: [
      `--name=${p.id}`,
      `--data-dir=${p.paths.etcdData}`,
      `--listen-client-urls=${listenClient}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${listenPeer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=${p.id}=${peer}`,
      '--initial-cluster-state=new',
      ...f.pair(PkiFile.etcdServer, 'cert-file', 'key-file'),
      '--client-cert-auth=true',
      `--trusted-ca-file=${f.cert(PkiFile.etcdCA)}`,
      ...f.pair(PkiFile.etcdServer, 'peer-cert-file', 'peer-key-file'),
      '--peer-client-cert-auth=true',
      `--peer-trusted-ca-file=${f.cert(PkiFile.etcdCA)}`,
      '--log-level=warn',
      ...(p.etcdUnsafeNoFsync ? ['--unsafe-no-fsync=true'] : []),
      ...(p.pod ? [`--listen-metrics-urls=http://${p.listen.etcd}:${p.pod.etcdHealthPort}`] : []),
    ],
    probe: probeOf(p, p.ports.etcdClient, '/readyz', PkiFile.etcdCA, PkiFile.apiserverEtcdClient),
    files: f.files(),
    writes: [p.paths.etcdData],
    ports: { client: p.ports.etcdClient, peer: p.ports.etcdPeer },
    ...(p.pod
      ? {
          namespace: p.pod.namespace,
          service: { name: p.pod.etcdService, headless: true },
          health: { scheme: 'HTTP', port: p.pod.etcdHealthPort, ready: '/readyz', live: '/livez' },
        }
      : {}),
  };
}

export function apiserverSpec(p: Placement, b: ControlPlanePrograms): ComponentSpec {
  const f = reads(p);
  return {
    owner: p.id,
    name: 'kube-apiserver',
    command: b.kubeApiserver,
    env: LEAN_GC,
    args: [
      `--advertise-address=${p.advertise.address}`,
      `--bind-address=${p.listen.apiserver}`,
      `--secure-port=${p.ports.apiserver}`,
      `--etcd-servers=https://${p.etcdHost}:${p.ports.etcdClient}`,
      `--etcd-cafile=${f.cert(PkiFile.etcdCA)}`,
      ...f.pair(PkiFile.apiserverEtcdClient, 'etcd-certfile', 'etcd-keyfile'),
      ...f.pair(PkiFile.apiserver, 'tls-cert-file', 'tls-private-key-file'),
      `--client-ca-file=${f.cert(PkiFile.ca)}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${f.pki(ServiceAccountKey.public)}`,
      `--service-account-signing-key-file=${f.pki(ServiceAccountKey.private)}`,
      `--service-cluster-ip-range=${p.serviceCIDR}`,
      '--authorization-mode=Node,RBAC',
      '--allow-privileged=true',
      '--enable-admission-plugins=NodeRestriction',
      `--requestheader-client-ca-file=${f.cert(PkiFile.frontProxyCA)}`,
      '--requestheader-allowed-names=front-proxy-client',
      '--requestheader-username-headers=X-Remote-User',
      '--requestheader-group-headers=X-Remote-Group',
      '--requestheader-extra-headers-prefix=X-Remote-Extra-',
      ...f.pair(PkiFile.frontProxyClient, 'proxy-client-cert-file', 'proxy-client-key-file'),
      // Logs, exec, attach and port-forward: kubelets (and clusterTree's kubelet endpoint)
      // serve with certificates of this cluster's CA and know the apiserver by this one.
      ...f.pair(PkiFile.apiserverKubeletClient, 'kubelet-client-certificate', 'kubelet-client-key'),
      `--kubelet-certificate-authority=${f.cert(PkiFile.ca)}`,
      // A tenant node's InternalDNS address is clusterTree's kubelet endpoint (its InternalIP is
      // the host node's); a real kubelet's nodes have none and are reached at their InternalIP.
      '--kubelet-preferred-address-types=InternalDNS,InternalIP,ExternalIP,Hostname',
      // The `kubernetes` Service's endpoint is the advertised address: where there is none pods
      // could reach (a loopback address is no valid endpoint), keep no endpoint at all.
      `--endpoint-reconciler-type=${p.advertise.endpoint ? 'lease' : 'none'}`,
      '--profiling=false',
      ...(p.auditLog
        ? [
            `--audit-policy-file=${f.auditPolicy()}`,
            `--audit-log-path=${p.paths.auditLog}`,
            '--audit-log-maxsize=10',
            '--audit-log-maxbackup=1',
            '--audit-log-format=json',
          ]
        : []),
    ],
    probe: probeOf(p, p.ports.apiserver, '/readyz', PkiFile.ca, PkiFile.admin),
    files: f.files(),
    ...(p.auditLog ? { writes: [dirname(p.paths.auditLog)] } : {}),
    ports: { https: p.ports.apiserver },
    ...(p.pod
      ? {
          namespace: p.pod.namespace,
          service: {
            name: p.pod.apiService,
            port: p.pod.apiServicePort,
            // Its advertised endpoint: the ClusterIP on the API server's own port.
            ...(p.advertise.endpoint ? { direct: true } : {}),
          },
          health: { scheme: 'HTTPS', port: p.ports.apiserver, ready: '/readyz', live: '/livez' },
        }
      : {}),
  };
}

/**
 * `reloading`: its kubeconfig names the certificate files rather than holding them
 * (reloadingKubeconfig), so a renewal needs no restart (in kube-control-plane, whose API server
 * would restart with it).
 */
export function controllerManagerSpec(
  p: Placement,
  b: ControlPlanePrograms,
  reloading = false,
): ComponentSpec {
  const f = reads(p);
  const conf = reloading ? f.reloadingKubeconfig('controller-manager') : f.kubeconfig('controller-manager');
  return {
    owner: p.id,
    name: 'kube-controller-manager',
    command: b.kubeControllerManager,
    args: [
      ...delegated(conf),
      `--bind-address=${p.listen.controllerManager}`,
      `--secure-port=${p.ports.controllerManager}`,
      ...f.pair(PkiFile.controllerManagerServing, 'tls-cert-file', 'tls-private-key-file'),
      `--root-ca-file=${f.cert(PkiFile.ca)}`,
      `--service-account-private-key-file=${f.pki(ServiceAccountKey.private)}`,
      '--use-service-account-credentials=true',
      ...f.pair(PkiFile.clusterSigner, 'cluster-signing-cert-file', 'cluster-signing-key-file'),
      `--cluster-name=${p.id}`,
      `--service-cluster-ip-range=${p.serviceCIDR}`,
      // A tenant's nodes are as healthy as their host nodes, whose conditions and taints
      // clusterTree copies; the taint-eviction controller acts on those taints (ADR 12, decision 19).
      ...(p.judgesNodes ? [] : ['--controllers=*,-node-lifecycle-controller']),
      '--leader-elect=false',
      '--profiling=false',
    ],
    probe: probeOf(p, p.ports.controllerManager, '/healthz', PkiFile.ca),
    files: f.files(),
    ports: { https: p.ports.controllerManager },
    ...inPod(p, p.ports.controllerManager),
  };
}

/** `reloading`: as controllerManagerSpec's. */
export function schedulerSpec(p: Placement, b: ControlPlanePrograms, reloading = false): ComponentSpec {
  const f = reads(p);
  return {
    owner: p.id,
    name: 'kube-scheduler',
    command: b.kubeScheduler,
    args: [
      ...delegated(reloading ? f.reloadingKubeconfig('scheduler') : f.kubeconfig('scheduler')),
      `--bind-address=${p.listen.scheduler}`,
      `--secure-port=${p.ports.scheduler}`,
      ...f.pair(PkiFile.schedulerServing, 'tls-cert-file', 'tls-private-key-file'),
      '--leader-elect=false',
      '--profiling=false',
    ],
    probe: probeOf(p, p.ports.scheduler, '/healthz', PkiFile.ca),
    files: f.files(),
    ports: { https: p.ports.scheduler },
    ...inPod(p, p.ports.scheduler),
  };
}

/** The controller-manager and scheduler in kube-control-plane, and the leaf each is. */
export const RELOADING = {
  'controller-manager': PkiFile.controllerManager,
  scheduler: PkiFile.scheduler,
} as const;
export type ReloadingUser = keyof typeof RELOADING;
export const reloadingKubeconfigName = (who: ReloadingUser): string => `${who}.reloading.conf`;

/**
 * The API server, controller-manager and scheduler of `apiserverSpec`, `controllerManagerSpec`
 * and `schedulerSpec` as one process of kube-control-plane (ADR 12, decision 16): the same flags,
 * each component's after its name, except the two's kubeconfigs, which name their certificate
 * files (reloadingKubeconfig in kubeconfigs.ts: a renewal restarts nothing); Go's default GC target while it
 * starts, then etcd's (the process sets it itself: KOSMOS_VC_GOGC_SETTLED). It is the API
 * server's component (its probe, its name); the other two serve their own ports in it.
 * `clients`: a digest of what the controller-manager and scheduler read once at their start
 * (those kubeconfigs and the CA bundle), so that new ones (a CA rotation's steps) make a new spec,
 * which replaces the running process.
 */
export function oneProcessSpec(
  p: Placement,
  b: ControlPlanePrograms & { kubeControlPlane: string },
  clients?: string,
): ComponentSpec {
  const parts = [apiserverSpec(p, b), controllerManagerSpec(p, b, true), schedulerSpec(p, b, true)];
  const files = new Map<string, FileSet>();
  for (const f of parts.flatMap((s) => s.files ?? [])) {
    const seen = files.get(f.source);
    files.set(f.source, seen ? { ...f, keys: [...new Set([...seen.keys, ...f.keys])].sort() } : f);
  }
  const [apiserver] = parts as [ComponentSpec, ...ComponentSpec[]];
  return {
    ...apiserver,
    command: b.kubeControlPlane,
    // The process starts at Go's default GC target (the heap may grow four times as much between
    // collections: twenty tenants started at once were Ready in 66 s against 86) and sets the lean
    // one itself once it has started (ADR 12, decision 16); GOGC stays for a binary built before.
    env: {
      ...apiserver.env,
      KOSMOS_VC_GOGC_SETTLED: LEAN_GC.GOGC!,
      KOSMOS_VC_GOGC_SETTLE_AFTER: `${ONE_PROCESS_SETTLES_MS}ms`,
      ...(clients ? { KOSMOS_VC_CLIENTS: clients } : {}),
    },
    args: parts.flatMap((s) => [s.name, ...s.args]),
    files: [...files.values()],
    ports: {
      ...apiserver.ports,
      controllerManager: p.ports.controllerManager,
      scheduler: p.ports.scheduler,
    },
  };
}

/** A pod's namespace and the kubelet's probe of /healthz (anonymous: the components allow it). */
const inPod = (p: Placement, port: number): Pick<ComponentSpec, 'namespace' | 'health'> =>
  p.pod
    ? { namespace: p.pod.namespace, health: { scheme: 'HTTPS', port, ready: '/healthz', live: '/healthz' } }
    : {};

const delegated = (conf: string): string[] => [
  `--kubeconfig=${conf}`,
  `--authentication-kubeconfig=${conf}`,
  `--authorization-kubeconfig=${conf}`,
];
