/**
 * A cluster's DNS: CoreDNS run as a component next to the control plane, answering for the
 * cluster's Services and pods from that cluster's own API (its `kubernetes` plugin, with a
 * least-privilege client certificate), listening on the real node's address. Pods reach it
 * through a Service without a selector whose EndpointSlice names that address and port, so
 * kube-proxy carries port 53 of the Service's ClusterIP to it.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import {
  CoreV1Api,
  DiscoveryV1Api,
  RbacAuthorizationV1Api,
  type V1EndpointSlice,
  type V1Service,
} from '@kubernetes/client-node';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ignoreStatus, isConflict } from '../api/kubeClient.js';
import { issueCertificate, type CertKey } from '../pki/certificates.js';
import { renderKubeconfig } from '../pki/kubeconfig.js';
import type { Logger } from '../worker/logger.js';
import type { PortAllocator } from './ports.js';
import { filesDigestEnv, startAndWait, type ComponentSpec, type ControlPlaneRuntime } from './types.js';

import { DNS_USER } from '../pki/controlPlanePki.js';

export { DNS_USER };

export interface DnsLayout {
  owner: string;
  dir: string;
  /** Address CoreDNS listens on for queries (the real node's); a pod's: every address of the pod. */
  bind?: string;
  port: number;
  /** Loopback port of the `ready` plugin: 200 once the API is synced (a pod's: on every address). */
  readyPort: number;
  /** A pod's: the `health` plugin's port, for the kubelet's liveness probe. */
  healthPort?: number;
  clusterDomain: string;
  /** The cluster's API server and CA, and the CA key that signs CoreDNS's client certificate. */
  server: string;
  ca: CertKey;
  /** CoreDNS's client certificate, issued with the cluster's others; absent: one is issued here once. */
  client?: CertKey;
}

export const corefilePath = (l: DnsLayout): string => join(l.dir, 'Corefile');
const kubeconfigFile = (l: DnsLayout): string => join(l.dir, 'coredns.conf');

/**
 * Authoritative for the cluster domain and the reverse zones (from the cluster's API); every other
 * name is answered NXDOMAIN at once: no upstream resolver is reachable, and nothing is forwarded
 * off the machine.
 */
export function corefile(l: DnsLayout): string {
  const listen = (zone: string) => `${zone}:${l.port}`;
  const bind = l.bind ? `\n    bind ${l.bind}` : '';
  return `${listen(l.clusterDomain)} ${listen('in-addr.arpa')} ${listen('ip6.arpa')} {${bind}
    errors
    ready ${l.bind ? '127.0.0.1' : ''}:${l.readyPort}${l.healthPort ? `\n    health :${l.healthPort}` : ''}
    kubernetes ${l.clusterDomain} in-addr.arpa ip6.arpa {
        kubeconfig ${kubeconfigFile(l)}
        pods insecure
        ttl 30
    }
    cache 30
    loadbalance
}
${listen('.')} {${bind}
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`;
}

/** Writes the Corefile and CoreDNS's kubeconfig (certificate issued once) and returns its spec. */
export async function prepareDns(l: DnsLayout, coredns: string): Promise<ComponentSpec> {
  await mkdir(l.dir, { recursive: true, mode: 0o700 });
  const conf = kubeconfigFile(l);
  let kubeconfig = await readFile(conf, 'utf8').catch(() => undefined);
  if (l.client || !kubeconfig?.includes(Buffer.from(l.ca.certPem).toString('base64'))) {
    const cert = l.client ?? (await issueCertificate(l.ca, { commonName: DNS_USER, usage: 'client' }));
    kubeconfig = renderKubeconfig({
      clusterName: l.owner,
      server: l.server,
      caPem: l.ca.certPem,
      userName: DNS_USER,
      certPem: cert.certPem,
      keyPem: cert.keyPem,
    });
    await writeFile(conf, kubeconfig, { mode: 0o600 });
  }
  const text = corefile(l);
  await writeFile(corefilePath(l), text);
  return {
    owner: l.owner,
    name: 'coredns',
    command: coredns,
    args: ['-conf', corefilePath(l)],
    // It reads both once: new ones (a renewed certificate) restart it.
    env: filesDigestEnv({ Corefile: text, kubeconfig }),
    probe: { url: `http://127.0.0.1:${l.readyPort}/ready` },
  };
}

/** CoreDNS as a pod of a tenant's host namespace (ADR 14): its files' directory, its ports (not 53: it runs without privileges). */
export const DNS_POD = {
  dir: '/etc/kosmos-vc/coredns',
  port: 1053,
  readyPort: 8181,
  healthPort: 8080,
} as const;

/**
 * CoreDNS as a pod (ADR 14): its spec and the files of its Secret (`coredns` source): the
 * Corefile, listening on every address of the pod, and its kubeconfig with its client
 * certificate. Its Service `service` carries port 53 (UDP and TCP) to it; the kubelet probes
 * `ready` (synced with the API) and `health` (alive, whatever the API does).
 */
export function podDns(o: {
  owner: string;
  namespace: string;
  service: string;
  server: string;
  ca: CertKey;
  client: CertKey;
}): { spec: ComponentSpec; files: Record<string, string> } {
  const l: DnsLayout = {
    owner: o.owner,
    dir: DNS_POD.dir,
    port: DNS_POD.port,
    readyPort: DNS_POD.readyPort,
    healthPort: DNS_POD.healthPort,
    clusterDomain: 'cluster.local',
    server: o.server,
    ca: o.ca,
  };
  const files = {
    Corefile: corefile(l),
    'coredns.conf': renderKubeconfig({
      clusterName: o.owner,
      server: o.server,
      caPem: o.ca.certPem,
      userName: DNS_USER,
      certPem: o.client.certPem,
      keyPem: o.client.keyPem,
    }),
  };
  const spec: ComponentSpec = {
    owner: o.owner,
    name: 'coredns',
    command: '/coredns',
    args: ['-conf', corefilePath(l)],
    // CoreDNS reads its kubeconfig once: a change to its files is a change of the pod (it rolls).
    env: filesDigestEnv(files),
    files: [{ source: 'coredns', path: DNS_POD.dir, keys: Object.keys(files) }],
    ports: { dns: DNS_POD.port, ready: DNS_POD.readyPort, health: DNS_POD.healthPort },
    namespace: o.namespace,
    service: { name: o.service, port: 53, udp: true },
    health: {
      scheme: 'HTTP',
      port: DNS_POD.readyPort,
      ready: '/ready',
      live: '/health',
      livePort: DNS_POD.healthPort,
    },
    probe: { url: `http://localhost:${DNS_POD.readyPort}/ready` },
  };
  return { spec, files };
}

/**
 * Starts (or adopts) a cluster's CoreDNS on `bind`: two ports of `portOwner` (queries, readiness),
 * its RBAC in the cluster, its Corefile and kubeconfig. Returns the query port, for the Service
 * that leads pods to it.
 */
export async function startClusterDns(o: {
  runtime: ControlPlaneRuntime;
  ports: PortAllocator;
  portOwner: string;
  owner: string;
  dir: string;
  bind: string;
  /** An admin client of the cluster (for the RBAC), and its API server and CA for CoreDNS. */
  kc: KubeConfig;
  server: string;
  ca: CertKey;
  client?: CertKey;
  coredns: string;
  timeoutMs: number;
  logger: Logger;
}): Promise<number> {
  const [port, readyPort] = (await o.ports.allocate(o.portOwner, 2)) as [number, number];
  await ensureDnsRbac(o.kc);
  const spec = await prepareDns(
    {
      owner: o.owner,
      dir: o.dir,
      bind: o.bind,
      port,
      readyPort,
      clusterDomain: 'cluster.local',
      server: o.server,
      ca: o.ca,
      ...(o.client ? { client: o.client } : {}),
    },
    o.coredns,
  );
  await startAndWait(o.runtime, spec, o.timeoutMs, o.logger);
  return port;
}

/** What CoreDNS's kubernetes plugin reads, as a ClusterRole bound to DNS_USER. */
export async function ensureDnsRbac(kc: KubeConfig): Promise<void> {
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  const name = 'kosmos-vc:coredns';
  const role = {
    metadata: { name },
    rules: [
      {
        apiGroups: [''],
        resources: ['endpoints', 'services', 'pods', 'namespaces'],
        verbs: ['list', 'watch'],
      },
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
    ],
  };
  const binding = {
    metadata: { name },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: DNS_USER }],
  };
  await rbac.createClusterRole({ body: role }).catch(ignoreStatus(409));
  await rbac.createClusterRoleBinding({ body: binding }).catch(ignoreStatus(409));
}

/**
 * A Service `namespace/name` (port 53 UDP and TCP, the given ClusterIP or any) with an
 * EndpointSlice naming `address:port`: how pods reach a DNS server that is not a pod.
 * Returns the Service's ClusterIP.
 */
export async function ensureDnsService(
  kc: KubeConfig,
  s: {
    namespace: string;
    name: string;
    clusterIP?: string;
    address: string;
    port: number;
    labels?: Record<string, string>;
  },
): Promise<string> {
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const ports = [
    { name: 'dns', protocol: 'UDP', port: 53 },
    { name: 'dns-tcp', protocol: 'TCP', port: 53 },
  ];
  const svc: V1Service = {
    metadata: { name: s.name, namespace: s.namespace, labels: { 'k8s-app': 'kube-dns', ...s.labels } },
    spec: { ...(s.clusterIP ? { clusterIP: s.clusterIP } : {}), ports },
  };
  let current = await core
    .readNamespacedService({ name: s.name, namespace: s.namespace })
    .catch(ignoreStatus(404));
  current ??= await core.createNamespacedService({ namespace: s.namespace, body: svc });
  const slice: V1EndpointSlice = {
    metadata: {
      name: `${s.name}-kosmos-vc`,
      namespace: s.namespace,
      labels: {
        'kubernetes.io/service-name': s.name,
        'endpointslice.kubernetes.io/managed-by': 'kosmos-vc',
        ...s.labels,
      },
    },
    addressType: 'IPv4',
    endpoints: [{ addresses: [s.address], conditions: { ready: true } }],
    ports: ports.map((p) => ({ name: p.name, protocol: p.protocol, port: s.port })),
  };
  await ensureEndpointSlice(discovery, slice);
  return current.spec!.clusterIP!;
}

/** Creates an EndpointSlice, or replaces the one of that name: how a Service without a selector gets its endpoints. */
export async function ensureEndpointSlice(discovery: DiscoveryV1Api, slice: V1EndpointSlice): Promise<void> {
  const namespace = slice.metadata!.namespace!;
  try {
    await discovery.createNamespacedEndpointSlice({ namespace, body: slice });
  } catch (e) {
    if (!isConflict(e)) throw e;
    await discovery.replaceNamespacedEndpointSlice({ name: slice.metadata!.name!, namespace, body: slice });
  }
}
