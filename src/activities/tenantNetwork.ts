/**
 * What a tenant's pods reach on the host network (docs/adr/0007-tenant-workloads.md):
 *
 * - the tenant API server, through the host Service `kosmos-apiserver` in the tenant's host
 *   namespace: no selector, an EndpointSlice naming the node address and the apiserver's port.
 *   Its ClusterIP is in the apiserver's certificate, is the ClusterIP of the tenant's
 *   `default/kubernetes`, and is what KUBERNETES_SERVICE_HOST says in every tenant pod;
 * - the tenant DNS, a CoreDNS of the tenant's own (component `coredns`) answering from the tenant
 *   API on the node address, behind the host Service `kube-dns` in the same namespace; the tenant's
 *   `kube-system/kube-dns` has the same ClusterIP.
 *
 * Both exist only where the operator knows an address of this machine that host pods reach
 * (`nodeAddress`: the real node's); with simulated nodes only there is nothing to reach them from.
 */
import {
  DiscoveryV1Api,
  KubeConfig,
  NetworkingV1Api,
  PatchStrategy,
  type KubernetesObject,
  type V1NetworkPolicy,
} from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/activity';
import { join } from 'node:path';
import { apiMessage, ignoreStatus, merge, statusCode } from '../api/kubeClient.js';
import {
  DEFAULT_POD_SECURITY,
  cidrHolds,
  parseIPv4Cidr,
  type ApiServerExpose,
  type VirtualClusterRef,
} from '../api/virtualCluster.js';
import { OriginLabel, hostNamespace, promotionTaint, tenantHash } from '../clustertree/naming.js';
import { OPERATOR, OPERATOR_LABEL } from '../clustertree/translate.js';
import { PkiFile, loadPair } from '../pki/controlPlanePki.js';
import {
  DNS_POD,
  ensureDnsRbac,
  ensureDnsService,
  ensureEndpointSlice,
  podDns,
  startClusterDns,
} from '../runtime/dns.js';
import {
  COMPONENT_LABEL,
  CONTROL_PLANE_LABEL,
  FILE_SOURCES,
  selectorOf,
  selectorText,
  storeFiles,
} from '../runtime/podWorkload.js';
import { POD_PORTS, apiserverURL, pkiDir, type ControlPlaneLayout } from '../runtime/controlPlane.js';
import { operatorKubeconfig } from '../runtime/kubeconfigs.js';
import type { PortAllocator } from '../runtime/ports.js';
import { startAndWait, type ControlPlaneRuntime } from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import { FIELD_MANAGER, type HostCluster } from './hostCluster.js';
import { FailureType } from './types.js';

export const TENANT_API_SERVICE = 'kosmos-apiserver';
export const TENANT_DNS_SERVICE = 'kube-dns';
export const TENANT_API_PORT = 443;

export interface TenantNetworkDeps {
  host: HostCluster;
  runtime: ControlPlaneRuntime;
  ports: PortAllocator;
  nodeAddress: string;
  /** The host's pod range: mirrored EndpointSlices may name pods there (and the node). */
  podCIDR?: string;
  coredns: () => Promise<string>;
  readinessTimeoutMs: number;
  logger: Logger;
  /** Tenants may ask for spec.podSecurity: privileged. */
  allowPrivilegedTenants?: boolean;
}

export type PodSecurity = 'baseline' | 'privileged';

/**
 * The VirtualCluster's spec.podSecurity, as this operator grants it: `privileged` only where the
 * operator allows privileged tenants (a privileged tenant is root on its promoted nodes);
 * otherwise the step fails for good, saying so.
 */
export async function tenantPodSecurity(
  host: HostCluster,
  ref: VirtualClusterRef,
  allowPrivileged: boolean,
): Promise<PodSecurity> {
  const wanted = (await host.getVirtualCluster(ref))?.spec.podSecurity ?? DEFAULT_POD_SECURITY;
  if (wanted === 'privileged' && !allowPrivileged)
    throw ApplicationFailure.nonRetryable(
      'spec.podSecurity is privileged, which this operator does not allow: a privileged tenant is ' +
        'root on its promoted nodes (the operator allows it with KOSMOS_VC_ALLOW_PRIVILEGED_TENANTS=true)',
      FailureType.InvalidSpec,
    );
  return wanted;
}

/**
 * The tenant's host namespace, with the labels clusterTree's RBAC step applies too. Pod Security
 * admission backs clusterTree's own checks at the tenant's level; warnings and audit stay at
 * baseline either way.
 */
export function hostNamespaceObject(ref: VirtualClusterRef, podSecurity: PodSecurity): KubernetesObject {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: hostNamespace(ref),
      labels: {
        [OriginLabel.managedBy]: 'kosmos-vc',
        [OriginLabel.tenant]: tenantHash(ref),
        'pod-security.kubernetes.io/enforce': podSecurity,
        'pod-security.kubernetes.io/enforce-version': 'latest',
        'pod-security.kubernetes.io/warn': 'baseline',
        'pod-security.kubernetes.io/audit': 'baseline',
        'kosmos.io/virtual-cluster': ref.name,
        'kosmos.io/virtual-cluster-namespace': ref.namespace,
      },
    },
  };
}

/** Creates or updates the tenant's host namespace (server-side apply, the operator's fields). */
export async function applyHostNamespace(
  host: HostCluster,
  ref: VirtualClusterRef,
  allowPrivileged: boolean,
): Promise<void> {
  await host.objects.patch(
    hostNamespaceObject(ref, await tenantPodSecurity(host, ref, allowPrivileged)),
    undefined,
    undefined,
    FIELD_MANAGER,
    true,
    PatchStrategy.ServerSideApply,
  );
}

export const dnsPortOwner = (tenantId: string): string => `${tenantId}/dns`;

export const ISOLATION_POLICY = 'kosmos-vc-tenant-isolation';

/**
 * The NetworkPolicy a production host enforces between tenants: pods in the tenant's host
 * namespace accept connections from pods of the same namespace, from the node (kubelet probes,
 * NodePorts) and, for a control plane in pods, from the operator's namespace (the chart's);
 * nothing from other tenants' or the host's pods. Egress stays open: the tenant's API
 * and DNS are reached through the node address. It takes a CNI with a policy engine to enforce
 * it; the embedded host's bridge plugin has none (ADR 7).
 */
export function isolationPolicy(
  ref: VirtualClusterRef,
  nodeAddress: string | undefined,
  operatorNamespace?: string,
): V1NetworkPolicy {
  // client-node's serializer writes the model's `_from` as `from` (a plain `from` is dropped).
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: ISOLATION_POLICY,
      namespace: hostNamespace(ref),
      labels: { [OriginLabel.managedBy]: 'kosmos-vc', [OriginLabel.tenant]: tenantHash(ref) },
    },
    spec: {
      podSelector: {},
      policyTypes: ['Ingress'],
      ingress: [
        { _from: [{ podSelector: {} }] },
        ...(nodeAddress ? [{ _from: [{ ipBlock: { cidr: `${nodeAddress}/32` } }] }] : []),
        // An operator in pods calls the control plane's pods (their probes, the API server
        // through its Service, which keeps the caller's address).
        ...(operatorNamespace
          ? [
              {
                _from: [
                  {
                    namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': operatorNamespace } },
                  },
                ],
              },
            ]
          : []),
      ],
    },
  };
}

export const EXPOSURE_POLICY = 'kosmos-vc-apiserver-exposed';

/**
 * Beside the isolation policy, for a tenant in pods whose API server is exposed (NodePort,
 * LoadBalancer): its API server's pods, and only they, accept connections from anywhere on their
 * port. (The control-plane label is the operator's: clusterTree strips `kosmos.io/` labels from
 * tenant pods.)
 */
export function exposurePolicy(ref: VirtualClusterRef): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: EXPOSURE_POLICY,
      namespace: hostNamespace(ref),
      labels: { [OriginLabel.managedBy]: 'kosmos-vc', [OriginLabel.tenant]: tenantHash(ref) },
    },
    spec: {
      podSelector: {
        matchLabels: { [COMPONENT_LABEL]: 'kube-apiserver' },
        matchExpressions: [{ key: CONTROL_PLANE_LABEL, operator: 'Exists' }],
      },
      policyTypes: ['Ingress'],
      ingress: [{ ports: [{ protocol: 'TCP', port: POD_PORTS.apiserver }] }],
    },
  };
}

/**
 * The tenant API server's host Service (`kosmos-apiserver`, in its host namespace, made with the
 * namespace where missing); returns its ClusterIP. With `endpoint`, the process runtime's API
 * server at that address and port is its endpoint (an EndpointSlice kept here); without, the
 * kubernetes runtime gives it a selector of the API server's pods. Its type, node port and
 * annotations are the VirtualCluster's `spec.apiServer.expose` (a node port taken or refused
 * fails the tenant with the host's reason).
 */
export async function ensureApiService(
  host: HostCluster,
  ref: VirtualClusterRef,
  allowPrivilegedTenants: boolean,
  endpoint?: { address: string; port: number },
): Promise<string> {
  const ns = hostNamespace(ref);
  // A namespace being deleted (a release just before a retry) still shows its Service, whose
  // address goes with it: waited out (the step's heartbeats go on), for up to three minutes.
  const deadline = Date.now() + 180_000;
  for (;;) {
    const current = await host.core.readNamespace({ name: ns }).catch(ignoreStatus(404));
    if (!current?.metadata?.deletionTimestamp) break;
    if (Date.now() >= deadline)
      throw new Error(
        `host namespace ${ns} is still being deleted: its API server Service is made once it is gone`,
      );
    await new Promise((r) => setTimeout(r, 1000));
  }
  await applyHostNamespace(host, ref, allowPrivilegedTenants);
  const labels = { [OriginLabel.managedBy]: 'kosmos-vc' };
  const expose = (await host.getVirtualCluster(ref))?.spec.apiServer?.expose;
  const type = expose?.type ?? 'ClusterIP';
  const port = {
    name: 'https',
    protocol: 'TCP',
    port: TENANT_API_PORT,
    ...(expose?.nodePort ? { nodePort: expose.nodePort } : {}),
  };
  const refused = (e: unknown): never => {
    if (statusCode(e) === 422)
      throw ApplicationFailure.nonRetryable(
        `the host refused the API server's ${type} Service: ${apiMessage(e)}`,
        FailureType.InvalidSpec,
      );
    throw e;
  };
  let svc = await host.core
    .readNamespacedService({ name: TENANT_API_SERVICE, namespace: ns })
    .catch(ignoreStatus(404));
  svc ??= await host.core
    .createNamespacedService({
      namespace: ns,
      body: {
        metadata: {
          name: TENANT_API_SERVICE,
          namespace: ns,
          labels,
          ...(expose?.annotations ? { annotations: expose.annotations } : {}),
        },
        spec: { type, ports: [port] },
      },
    })
    .catch(refused);
  // One made before the tenant was exposed (by a version without it) takes the type now; its
  // other ports (the runtime's) stay, a ClusterIP keeps no node port.
  if ((svc.spec?.type ?? 'ClusterIP') !== type) {
    const ports = (svc.spec?.ports ?? [port]).map(({ nodePort: _nodePort, ...p }) =>
      p.name === port.name ? { ...p, ...port } : p,
    );
    svc = await host.core
      .patchNamespacedService(
        {
          name: TENANT_API_SERVICE,
          namespace: ns,
          body: { metadata: { annotations: expose?.annotations ?? {} }, spec: { type, ports } },
        },
        merge,
      )
      .catch(refused);
  }
  if (endpoint)
    await ensureEndpointSlice(host.kubeConfig.makeApiClient(DiscoveryV1Api), {
      metadata: {
        name: TENANT_API_SERVICE,
        namespace: ns,
        labels: { ...labels, 'kubernetes.io/service-name': TENANT_API_SERVICE },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: [endpoint.address], conditions: { ready: true } }],
      ports: [{ name: 'https', protocol: 'TCP', port: endpoint.port }],
    });
  if (!endpoint && type !== 'ClusterIP')
    await host.objects.patch(
      exposurePolicy(ref),
      undefined,
      undefined,
      FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
  return svc.spec!.clusterIP!;
}

/**
 * Where clients outside the host reach an exposed tenant API server (`spec.apiServer.expose`):
 * the address and the Service's node port (NodePort) or 443 (LoadBalancer); undefined for a
 * ClusterIP. A NodePort without an address takes the operator's node address.
 */
export async function exposedURL(
  host: HostCluster,
  ref: VirtualClusterRef,
  expose: ApiServerExpose | undefined,
  nodeAddress: string | undefined,
): Promise<string | undefined> {
  if (!expose || expose.type === 'ClusterIP') return undefined;
  const address = exposedAddress(expose, nodeAddress);
  if (expose.type === 'LoadBalancer') return `https://${address}:${TENANT_API_PORT}`;
  const svc = await host.core.readNamespacedService({
    name: TENANT_API_SERVICE,
    namespace: hostNamespace(ref),
  });
  const nodePort = svc.spec?.ports?.find((p) => p.name === 'https')?.nodePort;
  if (!nodePort)
    throw new Error(`the API server Service of ${ref.namespace}/${ref.name} has no node port yet`);
  return `https://${address}:${nodePort}`;
}

/** The address an exposed API server is reached at, which its certificate must name. */
export function exposedAddress(expose: ApiServerExpose, nodeAddress: string | undefined): string {
  const address = expose.address ?? (expose.type === 'NodePort' ? nodeAddress : undefined);
  if (!address)
    throw ApplicationFailure.nonRetryable(
      expose.type === 'NodePort'
        ? 'spec.apiServer.expose NodePort needs address: this operator knows no node address (KOSMOS_VC_NODE_ADDRESS)'
        : `spec.apiServer.expose ${expose.type} needs address: the IP or DNS name clients reach it at`,
      FailureType.InvalidSpec,
    );
  return address;
}

export function createTenantNetwork(deps: TenantNetworkDeps) {
  const nodeAddress = deps.nodeAddress;
  const hostKc = deps.host.kubeConfig;

  /**
   * The DNS of a tenant in pods (ADR 14): CoreDNS as a pod of its host namespace behind the
   * Service `kube-dns` there (port 53 to the pod's 1053); the tenant's own `kube-system/kube-dns`
   * has that Service's ClusterIP and names the pod's address, as a cluster's DNS Service does.
   */
  async function startPodDns(
    ref: VirtualClusterRef,
    tenantId: string,
    l: ControlPlaneLayout,
    tenantKc: KubeConfig,
  ): Promise<string> {
    const namespace = hostNamespace(ref);
    await ensureDnsRbac(tenantKc);
    const [ca, client] = await Promise.all([
      loadPair(pkiDir(l), PkiFile.ca),
      loadPair(pkiDir(l), PkiFile.coredns),
    ]);
    const { spec, files } = podDns({
      owner: tenantId,
      namespace,
      service: TENANT_DNS_SERVICE,
      server: apiserverURL(l),
      ca,
      client,
    });
    await storeFiles(deps.host.core, namespace, FILE_SOURCES.coredns.name, files);
    await startAndWait(
      deps.runtime,
      { ...spec, tolerates: promotionTaint(ref) },
      deps.readinessTimeoutMs,
      deps.logger,
    );
    const [svc, pods] = await Promise.all([
      deps.host.core.readNamespacedService({ name: TENANT_DNS_SERVICE, namespace }),
      deps.host.core.listNamespacedPod({
        namespace,
        labelSelector: selectorText(selectorOf(tenantId, 'coredns')),
      }),
    ]);
    const ip = svc.spec!.clusterIP!;
    // The newest ready pod: after a roll the old one may not be gone yet.
    const ready = pods.items
      .filter(
        (p) =>
          !p.metadata?.deletionTimestamp &&
          p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      )
      .sort(
        (a, b) =>
          new Date(b.metadata?.creationTimestamp ?? 0).getTime() -
          new Date(a.metadata?.creationTimestamp ?? 0).getTime(),
      )[0];
    const podIP = ready?.status?.podIP;
    if (!podIP)
      throw new Error(`the DNS pod of ${ref.namespace}/${ref.name} was ready and is not: tried again`);
    await ensureDnsService(tenantKc, {
      namespace: 'kube-system',
      name: TENANT_DNS_SERVICE,
      clusterIP: ip,
      address: podIP,
      port: DNS_POD.port,
      labels: { [OPERATOR_LABEL]: OPERATOR },
    });
    return ip;
  }

  return {
    nodeAddress,
    endpointRanges: [`${nodeAddress}/32`, ...(deps.podCIDR ? [deps.podCIDR] : [])],
    /**
     * Makes the host Service pods reach the tenant API server through and returns its ClusterIP
     * (before the certificates are issued: the address goes into the serving certificate).
     */
    async apiService(ref: VirtualClusterRef, apiserverPort: number): Promise<string> {
      return ensureApiService(deps.host, ref, deps.allowPrivilegedTenants ?? false, {
        address: nodeAddress,
        port: apiserverPort,
      });
    },

    /** Starts the tenant's CoreDNS and its Services on both sides; returns the DNS ClusterIP. */
    async startDns(
      ref: VirtualClusterRef,
      tenantId: string,
      l: ControlPlaneLayout,
      pods = false,
    ): Promise<string> {
      const tenantKc = new KubeConfig();
      tenantKc.loadFromFile(operatorKubeconfig(l));
      if (pods) return startPodDns(ref, tenantId, l, tenantKc);
      const port = await startClusterDns({
        runtime: deps.runtime,
        ports: deps.ports,
        portOwner: dnsPortOwner(tenantId),
        owner: tenantId,
        dir: join(l.dir, 'dns'),
        bind: deps.nodeAddress,
        kc: tenantKc,
        server: apiserverURL(l),
        ca: await loadPair(pkiDir(l), PkiFile.ca),
        // A set from before CoreDNS had its leaf there lacks it: CoreDNS's own is issued then.
        ...(await loadPair(pkiDir(l), PkiFile.coredns).then(
          (client) => ({ client }),
          () => ({}),
        )),
        coredns: await deps.coredns(),
        timeoutMs: deps.readinessTimeoutMs,
        logger: deps.logger,
      });
      const ip = await ensureDnsService(hostKc, {
        namespace: hostNamespace(ref),
        name: TENANT_DNS_SERVICE,
        address: deps.nodeAddress,
        port,
        labels: { [OriginLabel.managedBy]: 'kosmos-vc' },
      });
      // The tenant sees a normal cluster DNS Service, at the address that carries its traffic.
      await ensureDnsService(tenantKc, {
        namespace: 'kube-system',
        name: TENANT_DNS_SERVICE,
        clusterIP: ip,
        address: deps.nodeAddress,
        port,
        // Already at its host address: clusterTree leaves it alone.
        labels: { [OPERATOR_LABEL]: OPERATOR },
      });
      return ip;
    },

    async stopDns(tenantId: string): Promise<void> {
      await deps.runtime.stop(tenantId, 'coredns');
      await deps.ports.release(dnsPortOwner(tenantId));
    },

    /**
     * Refuses a service range that does not hold the host's: a tenant Service takes its host
     * Service's ClusterIP (ADR 7), the tenant's DNS first, and the tenant's API server accepts
     * none outside its range (it was a 422, retried again and again). The host's ranges are its
     * ServiceCIDR objects (Kubernetes 1.33+); a host without the API, or that does not let the
     * operator list them, is not checked.
     */
    async refuseForeignServiceRange(ref: VirtualClusterRef, serviceCIDR: string): Promise<void> {
      const hostRanges: string[] = await hostKc
        .makeApiClient(NetworkingV1Api)
        .listServiceCIDR()
        .then((l) => l.items.flatMap((c) => c.spec?.cidrs ?? []).filter((c) => parseIPv4Cidr(c)))
        .catch((e: unknown) => {
          const code = statusCode(e);
          if (code === 403 || code === 404) return [];
          throw e;
        });
      const outside = hostRanges.filter((h) => !cidrHolds(serviceCIDR, h));
      if (outside.length === 0) return;
      throw ApplicationFailure.nonRetryable(
        `spec.serviceCIDR ${serviceCIDR} of ${ref.namespace}/${ref.name} does not hold the host's service range ${outside.join(', ')}: ` +
          "a tenant Service takes its host Service's ClusterIP, so a tenant whose pods run on the host needs a range that holds the host's",
        FailureType.InvalidSpec,
      );
    },

    /** The ClusterIP of the tenant API server's host Service, if it exists. */
    async apiClusterIP(ref: VirtualClusterRef): Promise<string | undefined> {
      const svc = await deps.host.core
        .readNamespacedService({ name: TENANT_API_SERVICE, namespace: hostNamespace(ref) })
        .catch(ignoreStatus(404));
      return svc?.spec?.clusterIP;
    },
  };
}

export type TenantNetwork = ReturnType<typeof createTenantNetwork>;
