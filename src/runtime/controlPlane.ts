/**
 * The components of one Kubernetes control plane (etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler) as ComponentSpecs, plus the files they read.
 * Used for every tenant and for the embedded host cluster alike.
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderKubeconfig } from '../pki/kubeconfig.js';
import {
  certPath,
  keyPath,
  ensureCurrentFiles,
  loadPair,
  OPERATOR_USER,
  PkiFile,
  ServiceAccountKey,
  type PkiName,
} from '../pki/controlPlanePki.js';
import type { Binaries } from './binaries.js';
import type { ComponentSpec } from './types.js';

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
export const kubeconfigPath = (
  l: ControlPlaneLayout,
  who: 'admin' | 'operator' | 'controller-manager' | 'scheduler',
): string => join(l.dir, 'kubeconfigs', `${who}.conf`);

/** What the operator itself calls a tenant with: its own identity (ensureOperatorKubeconfig). */
export function operatorKubeconfig(l: ControlPlaneLayout): string {
  const own = kubeconfigPath(l, 'operator');
  return existsSync(own) ? own : kubeconfigPath(l, 'admin');
}

/** Writes the operator's kubeconfig where a set from an older version has none yet. */
export async function ensureOperatorKubeconfig(l: ControlPlaneLayout): Promise<void> {
  if (existsSync(kubeconfigPath(l, 'operator'))) return;
  await writeKubeconfigs(l);
}
export const apiserverURL = (l: ControlPlaneLayout): string => `https://${l.address}:${l.ports.apiserver}`;

const pair = (l: ControlPlaneLayout, name: PkiName, certFlag: string, keyFlag: string): string[] => [
  `--${certFlag}=${certPath(pkiDir(l), name)}`,
  `--${keyFlag}=${keyPath(pkiDir(l), name)}`,
];

/**
 * The Go garbage collector's target for etcd and kube-apiserver: a heap may grow 25 % over the
 * live data before a collection (Go's default is 100 %). An idle tenant apiserver holds ~90 MiB
 * live and kept ~200 MiB of anonymous memory at the default; this keeps it near 130 MiB for a
 * few collections more under load. The controller-manager and scheduler gained nothing
 * measurable and keep the default (docs/adr/0012-tenant-density-and-speed.md).
 */
export const LEAN_GC: Readonly<Record<string, string>> = { GOGC: '25' };

export function etcdSpec(l: ControlPlaneLayout, b: Binaries): ComponentSpec {
  const client = `https://${l.address}:${l.ports.etcdClient}`;
  const peer = `https://${l.address}:${l.ports.etcdPeer}`;
  const pki = pkiDir(l);
  return {
    owner: l.id,
    name: 'etcd',
    command: b.etcd,
    env: LEAN_GC,
    args: [
      `--name=${l.id}`,
      `--data-dir=${etcdDataDir(l)}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=${l.id}=${peer}`,
      '--initial-cluster-state=new',
      ...pair(l, PkiFile.etcdServer, 'cert-file', 'key-file'),
      '--client-cert-auth=true',
      `--trusted-ca-file=${certPath(pki, PkiFile.etcdCA)}`,
      ...pair(l, PkiFile.etcdServer, 'peer-cert-file', 'peer-key-file'),
      '--peer-client-cert-auth=true',
      `--peer-trusted-ca-file=${certPath(pki, PkiFile.etcdCA)}`,
      '--log-level=warn',
      ...(l.etcdUnsafeNoFsync ? ['--unsafe-no-fsync=true'] : []),
    ],
    probe: {
      url: `${client}/readyz`,
      caFile: certPath(pki, PkiFile.etcdCA),
      certFile: certPath(pki, PkiFile.apiserverEtcdClient),
      keyFile: keyPath(pki, PkiFile.apiserverEtcdClient),
    },
  };
}

export function apiserverSpec(l: ControlPlaneLayout, b: Binaries): ComponentSpec {
  const pki = pkiDir(l);
  return {
    owner: l.id,
    name: 'kube-apiserver',
    command: b.kubeApiserver,
    env: LEAN_GC,
    args: [
      `--advertise-address=${l.advertiseAddress ?? l.address}`,
      `--bind-address=${l.bindAddress ?? l.address}`,
      `--secure-port=${l.ports.apiserver}`,
      `--etcd-servers=https://${l.address}:${l.ports.etcdClient}`,
      `--etcd-cafile=${certPath(pki, PkiFile.etcdCA)}`,
      ...pair(l, PkiFile.apiserverEtcdClient, 'etcd-certfile', 'etcd-keyfile'),
      ...pair(l, PkiFile.apiserver, 'tls-cert-file', 'tls-private-key-file'),
      `--client-ca-file=${certPath(pki, PkiFile.ca)}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(pki, ServiceAccountKey.public)}`,
      `--service-account-signing-key-file=${join(pki, ServiceAccountKey.private)}`,
      `--service-cluster-ip-range=${l.serviceCIDR}`,
      '--authorization-mode=Node,RBAC',
      '--allow-privileged=true',
      '--enable-admission-plugins=NodeRestriction',
      `--requestheader-client-ca-file=${certPath(pki, PkiFile.frontProxyCA)}`,
      '--requestheader-allowed-names=front-proxy-client',
      '--requestheader-username-headers=X-Remote-User',
      '--requestheader-group-headers=X-Remote-Group',
      '--requestheader-extra-headers-prefix=X-Remote-Extra-',
      ...pair(l, PkiFile.frontProxyClient, 'proxy-client-cert-file', 'proxy-client-key-file'),
      // Logs, exec, attach and port-forward: kubelets (and clusterTree's kubelet endpoint)
      // serve with certificates of this cluster's CA and know the apiserver by this one.
      ...pair(l, PkiFile.apiserverKubeletClient, 'kubelet-client-certificate', 'kubelet-client-key'),
      `--kubelet-certificate-authority=${certPath(pki, PkiFile.ca)}`,
      // A tenant node's InternalDNS address is clusterTree's kubelet endpoint (its InternalIP is
      // the host node's); a real kubelet's nodes have none and are reached at their InternalIP.
      '--kubelet-preferred-address-types=InternalDNS,InternalIP,ExternalIP,Hostname',
      // The `kubernetes` Service's endpoint is the advertised address: where there is none pods
      // could reach (a loopback address is no valid endpoint), keep no endpoint at all.
      `--endpoint-reconciler-type=${l.advertiseAddress ? 'lease' : 'none'}`,
      '--profiling=false',
      ...(l.auditLog
        ? [
            `--audit-policy-file=${join(auditDir(l), 'policy.yaml')}`,
            `--audit-log-path=${auditLogPath(l)}`,
            '--audit-log-maxsize=10',
            '--audit-log-maxbackup=1',
            '--audit-log-format=json',
          ]
        : []),
    ],
    probe: {
      url: `${apiserverURL(l)}/readyz`,
      caFile: certPath(pki, PkiFile.ca),
      certFile: certPath(pki, PkiFile.admin),
      keyFile: keyPath(pki, PkiFile.admin),
    },
  };
}

const delegated = (conf: string): string[] => [
  `--kubeconfig=${conf}`,
  `--authentication-kubeconfig=${conf}`,
  `--authorization-kubeconfig=${conf}`,
];

export function controllerManagerSpec(l: ControlPlaneLayout, b: Binaries): ComponentSpec {
  const pki = pkiDir(l);
  return {
    owner: l.id,
    name: 'kube-controller-manager',
    command: b.kubeControllerManager,
    args: [
      ...delegated(kubeconfigPath(l, 'controller-manager')),
      `--bind-address=${l.address}`,
      `--secure-port=${l.ports.controllerManager}`,
      ...pair(l, PkiFile.controllerManagerServing, 'tls-cert-file', 'tls-private-key-file'),
      `--root-ca-file=${certPath(pki, PkiFile.ca)}`,
      `--service-account-private-key-file=${join(pki, ServiceAccountKey.private)}`,
      '--use-service-account-credentials=true',
      ...pair(l, PkiFile.clusterSigner, 'cluster-signing-cert-file', 'cluster-signing-key-file'),
      `--cluster-name=${l.id}`,
      `--service-cluster-ip-range=${l.serviceCIDR}`,
      '--leader-elect=false',
      '--profiling=false',
    ],
    probe: {
      url: `https://${l.address}:${l.ports.controllerManager}/healthz`,
      caFile: certPath(pki, PkiFile.ca),
    },
  };
}

export function schedulerSpec(l: ControlPlaneLayout, b: Binaries): ComponentSpec {
  const pki = pkiDir(l);
  return {
    owner: l.id,
    name: 'kube-scheduler',
    command: b.kubeScheduler,
    args: [
      ...delegated(kubeconfigPath(l, 'scheduler')),
      `--bind-address=${l.address}`,
      `--secure-port=${l.ports.scheduler}`,
      ...pair(l, PkiFile.schedulerServing, 'tls-cert-file', 'tls-private-key-file'),
      '--leader-elect=false',
      '--profiling=false',
    ],
    probe: { url: `https://${l.address}:${l.ports.scheduler}/healthz`, caFile: certPath(pki, PkiFile.ca) },
  };
}

/** The admin kubeconfig of a control plane, as text. */
export async function adminKubeconfig(
  l: ControlPlaneLayout,
  clusterName: string,
  server = apiserverURL(l),
): Promise<string> {
  const pki = pkiDir(l);
  const [ca, admin] = await Promise.all([loadPair(pki, PkiFile.ca), loadPair(pki, PkiFile.admin)]);
  return renderKubeconfig({
    clusterName,
    server,
    caPem: ca.certPem,
    userName: 'kubernetes-admin',
    certPem: admin.certPem,
    keyPem: admin.keyPem,
  });
}

/** Writes the kubeconfigs the components and an admin use (mode 0600). */
export async function writeKubeconfigs(l: ControlPlaneLayout): Promise<void> {
  const pki = pkiDir(l);
  // A set from an older version may lack a leaf written here (the operator's).
  await ensureCurrentFiles(pki);
  const ca = await loadPair(pki, PkiFile.ca);
  await mkdir(join(l.dir, 'kubeconfigs'), { recursive: true, mode: 0o700 });
  const users = [
    ['controller-manager', PkiFile.controllerManager, 'system:kube-controller-manager'],
    ['scheduler', PkiFile.scheduler, 'system:kube-scheduler'],
    ['admin', PkiFile.admin, 'kubernetes-admin'],
    ['operator', PkiFile.operator, OPERATOR_USER],
  ] as const;
  for (const [file, name, user] of users) {
    const p = await loadPair(pki, name);
    const text = renderKubeconfig({
      clusterName: l.id,
      server: apiserverURL(l),
      caPem: ca.certPem,
      userName: user,
      certPem: p.certPem,
      keyPem: p.keyPem,
    });
    await writeFile(kubeconfigPath(l, file), text, { mode: 0o600 });
  }
}
