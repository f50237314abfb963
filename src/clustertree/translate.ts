/**
 * Pure translations between a tenant's objects and their host counterparts. No I/O here: the
 * controller decides when to call these, unit tests check what they produce.
 *
 * A tenant pod becomes a host pod in the tenant's host namespace under its translated name. Every
 * name it refers to (ConfigMaps, Secrets, image pull secrets, its service-account token) is
 * translated the same way, and references to its own namespace and name (downward API) read
 * annotations that keep the tenant's values. Placement is the tenant scheduler's decision: a pod
 * bound to a promoted node goes to that host node; a pod on the virtual resource node is left to
 * the host scheduler, which may place it on unpromoted nodes and the tenant's own promoted ones
 * (never another tenant's: the taint). A pod asking for host access (host namespaces, host
 * paths, privileged containers, host ports) is refused, as it could reach other tenants through
 * a shared node, unless the tenant is privileged (ADR 8): then it may have it on the tenant's own
 * promoted nodes, and a virtual-node pod asking for it is pinned to them.
 */
import { createHash } from 'node:crypto';
import type {
  V1ServiceAccountTokenProjection,
  V1ConfigMap,
  V1Container,
  V1EphemeralContainer,
  V1EnvFromSource,
  V1EnvVar,
  V1EndpointSlice,
  V1ObjectFieldSelector,
  V1Pod,
  V1PodCondition,
  V1PodStatus,
  V1Secret,
  V1Service,
  V1Volume,
  V1VolumeProjection,
} from '@kubernetes/client-node';
import { cidrContains, type VirtualClusterRef } from '../api/virtualCluster.js';
import {
  MANAGER,
  OriginLabel,
  Promotion,
  RESERVED_PREFIX,
  RESOURCES_PRIORITY_CLASS,
  hostName,
  originAnnotations,
  originLabels,
  tenantHash,
  tokenSecretName,
  trustBundleConfigMapName,
} from './naming.js';
import { withTenantHosts } from './etcHosts.js';
import { TENANT_ONLY_RESOURCES, tenantOnlyResources, withoutResources } from './resources.js';
import { podCertificateProjection } from './podCertificates.js';
import { tenantDns, tenantServiceEnv } from './podNetwork.js';
import { PodRefused, refuse } from './podSecurity.js';
import { trustBundleKey } from './trustBundles.js';

export interface TenantContext {
  tenant: VirtualClusterRef;
  hostNamespace: string;
  /**
   * Where pods reach the tenant's own API server: the host ClusterIP of its Service, which is
   * also the ClusterIP of the tenant's `default/kubernetes` (and in its serving certificate).
   */
  tenantApi?: { clusterIP: string; port: number };
  /** The tenant's DNS Service address (tenant `kube-system/kube-dns`, same IP on the host). */
  clusterDNS?: string;
  clusterDomain?: string;
  /** spec.podSecurity; `privileged` lifts the refusals for pods on promoted nodes. */
  podSecurity?: 'baseline' | 'privileged';
  /** An image with `sh` and `sed` on the host nodes: puts a pod's tenant FQDN in /etc/hosts. */
  hostsImage?: string;
}

/** Annotations on a host pod that keep the tenant's view of it. */
export const PodAnnotation = {
  namespace: 'kosmos.io/namespace',
  name: 'kosmos.io/name',
  uid: 'kosmos.io/uid',
  node: 'kosmos.io/tenant-node',
  /** The label and annotation keys copied from the tenant pod (JSON): only those are removed. */
  tenantKeys: 'kosmos.io/tenant-keys',
  /** A virtual-node pod with host access, pinned to the tenant's promoted nodes: never elsewhere. */
  pinned: 'kosmos.io/pinned-to-promoted-nodes',
  /** The host pod has the /etc/hosts rewrite (etcHosts.ts): its init container is not the tenant's. */
  hostsRewritten: 'kosmos.io/hosts-rewritten',
  /**
   * Extended resources a virtual-node pod requests, left off its host pod (comma-separated): a
   * slice is CPU and memory only.
   */
  tenantOnlyResources: TENANT_ONLY_RESOURCES,
} as const;

/**
 * Annotation domains host components act on (Kubernetes itself, CNIs, meshes): a tenant's
 * annotations there would steer the host's network or identity for the pod, so they stay behind.
 */
const HOST_ANNOTATION_DOMAINS = [
  'kubernetes.io',
  'k8s.io',
  'cncf.io',
  'multus-cni.io',
  'projectcalico.org',
  'cilium.io',
  'ovn.org',
  'istio.io',
  'linkerd.io',
  'openshift.io',
  'amazonaws.com',
  'azure.com',
  'gke.io',
  'hashicorp.com',
  'kosmos.io',
];

/** A key under one of the host domains, or a dotted key without a domain (runtime annotations). */
function hostKey(k: string): boolean {
  const slash = k.indexOf('/');
  if (slash < 0) return k.includes('.');
  const domain = k.slice(0, slash);
  return HOST_ANNOTATION_DOMAINS.some((d) => domain === d || domain.endsWith(`.${d}`));
}

/** The tenant pod's annotations a host pod may carry (for the downward API and fieldRefs). */
export function tenantAnnotations(annotations: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(annotations ?? {}).filter(([k]) => !hostKey(k)));
}

/** On tenant nodes clusterTree created: only those it updates and deletes. */
export const TENANT_NODE_LABEL = OriginLabel.managedBy;

/** Tenant labels minus the reserved prefix, so a tenant cannot forge the origin labels. */
export function tenantLabels(labels: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(labels ?? {}).filter(([k]) => !k.startsWith(RESERVED_PREFIX)));
}

/** The labels a host pod of `namespace` carries and a host Service of `namespace` selects by. */
export function hostSelector(ctx: TenantContext, namespace: string, selector: Record<string, string>) {
  return { ...tenantLabels(selector), ...originLabels({ tenant: ctx.tenant, namespace }) };
}

function fieldRef(f: V1ObjectFieldSelector): V1ObjectFieldSelector {
  if (f.fieldPath === 'metadata.namespace')
    return { ...f, fieldPath: `metadata.annotations['${PodAnnotation.namespace}']` };
  if (f.fieldPath === 'metadata.name')
    return { ...f, fieldPath: `metadata.annotations['${PodAnnotation.name}']` };
  if (f.fieldPath === 'metadata.uid')
    return { ...f, fieldPath: `metadata.annotations['${PodAnnotation.uid}']` };
  return f;
}

function container(
  ns: string,
  c: V1Container,
  inherited: readonly V1EnvVar[] = [],
  leftOff: ReadonlySet<string> = new Set(),
): V1Container {
  const env = c.env?.map((e): V1EnvVar => {
    const from = e.valueFrom;
    if (!from) return e;
    if (from.configMapKeyRef)
      return {
        ...e,
        valueFrom: {
          configMapKeyRef: { ...from.configMapKeyRef, name: hostName(ns, from.configMapKeyRef.name!) },
        },
      };
    if (from.secretKeyRef)
      return {
        ...e,
        valueFrom: { secretKeyRef: { ...from.secretKeyRef, name: hostName(ns, from.secretKeyRef.name!) } },
      };
    if (from.fieldRef) return { ...e, valueFrom: { fieldRef: fieldRef(from.fieldRef) } };
    return e;
  });
  const envFrom = c.envFrom?.map((e): V1EnvFromSource => ({
    ...e,
    ...(e.configMapRef
      ? { configMapRef: { ...e.configMapRef, name: hostName(ns, e.configMapRef.name!) } }
      : {}),
    ...(e.secretRef ? { secretRef: { ...e.secretRef, name: hostName(ns, e.secretRef.name!) } } : {}),
  }));
  // The kubelet's variables come first, so the container's own (and $(VAR) references) win.
  const own = new Set((c.env ?? []).map((e) => e.name));
  const all = [...inherited.filter((e) => !own.has(e.name)), ...(env ?? [])];
  const resources = withoutResources(c.resources, leftOff);
  return {
    ...c,
    ...(all.length > 0 ? { env: all } : {}),
    ...(envFrom ? { envFrom } : {}),
    ...(resources ? { resources } : {}),
  };
}

function projection(
  ns: string,
  pod: string,
  p: V1VolumeProjection,
  key: string,
  tokens: readonly TokenRequestSpec[],
): V1VolumeProjection {
  if (p.configMap) return { configMap: { ...p.configMap, name: hostName(ns, p.configMap.name!) } };
  // The tenant's trust bundles, as clusterTree wrote them for this pod (trustBundles.ts).
  if (p.clusterTrustBundle)
    return {
      configMap: {
        name: trustBundleConfigMapName(ns, pod),
        items: [{ key, path: p.clusterTrustBundle.path }],
        ...(p.clusterTrustBundle.optional ? { optional: true } : {}),
      },
    };
  if (p.secret) return { secret: { ...p.secret, name: hostName(ns, p.secret.name!) } };
  // Key and chain as clusterTree obtained them from the tenant's signer (podCertificates.ts).
  if (p.podCertificate) return podCertificateProjection(ns, pod, key, p.podCertificate);
  if (p.serviceAccountToken)
    return {
      secret: {
        name: tokenSecretName(ns, pod),
        items: [
          {
            key: tokens.find((t) => sameToken(t, p.serviceAccountToken!))?.key ?? 'token',
            path: p.serviceAccountToken.path,
          },
        ],
      },
    };
  if (p.downwardAPI)
    return {
      downwardAPI: {
        items: (p.downwardAPI.items ?? []).map((i) =>
          i.fieldRef ? { ...i, fieldRef: fieldRef(i.fieldRef) } : i,
        ),
      },
    };
  return p;
}

function volume(ns: string, pod: string, v: V1Volume, tokens: readonly TokenRequestSpec[]): V1Volume {
  if (v.configMap) return { ...v, configMap: { ...v.configMap, name: hostName(ns, v.configMap.name!) } };
  if (v.secret) return { ...v, secret: { ...v.secret, secretName: hostName(ns, v.secret.secretName!) } };
  if (v.projected)
    return {
      ...v,
      projected: {
        ...v.projected,
        sources: (v.projected.sources ?? []).map((p, i) =>
          projection(ns, pod, p, trustBundleKey(v.name, i), tokens),
        ),
      },
    };
  if (v.downwardAPI)
    return {
      ...v,
      downwardAPI: {
        ...v.downwardAPI,
        items: (v.downwardAPI.items ?? []).map((i) =>
          i.fieldRef ? { ...i, fieldRef: fieldRef(i.fieldRef) } : i,
        ),
      },
    };
  return v;
}

/**
 * A service-account token a pod's projected volumes ask for (an audience and a lifetime), and the
 * key of the pod's host token Secret that holds it.
 */
export interface TokenRequestSpec {
  key: string;
  serviceAccount: string;
  audience?: string;
  expirationSeconds?: number;
}

const sameToken = (t: TokenRequestSpec, p: V1ServiceAccountTokenProjection): boolean =>
  (t.audience ?? '') === (p.audience ?? '') && t.expirationSeconds === p.expirationSeconds;

/**
 * Every distinct token a pod's projections ask for, in order: the first under the key `token`
 * (the only one before several were kept: running host pods project that key), each other under
 * a key named after its audience and lifetime.
 */
export function tokenRequests(pod: V1Pod): TokenRequestSpec[] {
  const out: TokenRequestSpec[] = [];
  for (const v of pod.spec?.volumes ?? [])
    for (const p of v.projected?.sources ?? []) {
      const t = p.serviceAccountToken;
      if (!t || out.some((o) => sameToken(o, t))) continue;
      const id = `${t.audience ?? ''}\n${t.expirationSeconds ?? ''}`;
      out.push({
        key:
          out.length === 0 ? 'token' : `token-${createHash('sha256').update(id).digest('hex').slice(0, 12)}`,
        serviceAccount: pod.spec!.serviceAccountName ?? 'default',
        ...(t.audience ? { audience: t.audience } : {}),
        ...(t.expirationSeconds ? { expirationSeconds: t.expirationSeconds } : {}),
      });
    }
  return out;
}

/** The names of ConfigMaps and Secrets a tenant pod needs on the host, and its tokens. */
export function podReferences(pod: V1Pod): {
  configMaps: Set<string>;
  secrets: Set<string>;
  tokens: TokenRequestSpec[];
} {
  const configMaps = new Set<string>();
  const secrets = new Set<string>();
  const s = pod.spec!;
  for (const v of s.volumes ?? []) {
    if (v.configMap?.name) configMaps.add(v.configMap.name);
    if (v.secret?.secretName) secrets.add(v.secret.secretName);
    for (const p of v.projected?.sources ?? []) {
      if (p.configMap?.name) configMaps.add(p.configMap.name);
      if (p.secret?.name) secrets.add(p.secret.name);
    }
  }
  for (const c of [...(s.initContainers ?? []), ...s.containers, ...(s.ephemeralContainers ?? [])]) {
    for (const e of c.env ?? []) {
      if (e.valueFrom?.configMapKeyRef?.name) configMaps.add(e.valueFrom.configMapKeyRef.name);
      if (e.valueFrom?.secretKeyRef?.name) secrets.add(e.valueFrom.secretKeyRef.name);
    }
    for (const e of c.envFrom ?? []) {
      if (e.configMapRef?.name) configMaps.add(e.configMapRef.name);
      if (e.secretRef?.name) secrets.add(e.secretRef.name);
    }
  }
  for (const r of s.imagePullSecrets ?? []) if (r.name) secrets.add(r.name);
  return { configMaps, secrets, tokens: tokenRequests(pod) };
}

/**
 * The hostname a kubelet gives a pod: its spec.hostname or its name, cut to 63 characters without
 * a trailing '-' or '.'. A pod name may hold dots, which the kubelet keeps but a pod's
 * spec.hostname (a DNS label) may not: on the host they become '-' (a host pod with such a
 * hostname would be refused, and a ReplicaSet of such pods would make failed pods without end).
 */
export function podHostname(name: string): string {
  return name
    .slice(0, 63)
    .replace(/[-.]+$/, '')
    .replace(/\./g, '-');
}

/**
 * The host pod for a tenant pod. `hostNode` is the promoted host node the tenant scheduler chose,
 * or undefined for the virtual resource node (the host scheduler places it). Throws PodRefused.
 */
export function hostPodFor(
  ctx: TenantContext,
  pod: V1Pod,
  hostNode: string | undefined,
  services: readonly V1Service[] = [],
): V1Pod {
  const { confined } = refuse(ctx.podSecurity, pod, hostNode);
  const copiedLabels = tenantLabels(pod.metadata?.labels);
  const copiedAnnotations = tenantAnnotations(pod.metadata?.annotations);
  const inherited = tenantServiceEnv(ctx, pod, services);
  const ns = pod.metadata!.namespace!;
  const name = pod.metadata!.name!;
  const s = pod.spec!;
  // The tenant's tolerations do not apply on the host, least of all one for the promotion taint.
  // A pod of the virtual node (promoted CPU/memory) goes to the host scheduler: it may run on any
  // unpromoted host node and on this tenant's own promoted nodes, never on another tenant's.
  const tolerations = hostNode
    ? [{ key: Promotion.taint, operator: 'Exists', effect: 'NoSchedule' }]
    : [{ key: Promotion.taint, operator: 'Equal', value: tenantHash(ctx.tenant), effect: 'NoSchedule' }];
  const tokens = tokenRequests(pod);
  const leftOff = hostNode ? [] : tenantOnlyResources(pod);
  const off = new Set(leftOff);
  const { spec, rewritten } = withTenantHosts(
    {
      containers: s.containers.map((c) => container(ns, c, inherited, off)),
      ...(s.initContainers
        ? { initContainers: s.initContainers.map((c) => container(ns, c, inherited, off)) }
        : {}),
      ...(s.volumes ? { volumes: s.volumes.map((v) => volume(ns, name, v, tokens)) } : {}),
      ...(s.imagePullSecrets
        ? { imagePullSecrets: s.imagePullSecrets.map((r) => ({ name: hostName(ns, r.name!) })) }
        : {}),
      ...(hostNode ? { nodeName: hostNode } : { priorityClassName: RESOURCES_PRIORITY_CLASS }),
      tolerations,
      // A privileged tenant's virtual-node pod with host access runs on the tenant's own nodes only.
      ...(confined
        ? {
            affinity: {
              nodeAffinity: {
                requiredDuringSchedulingIgnoredDuringExecution: {
                  nodeSelectorTerms: [
                    {
                      matchExpressions: [
                        { key: Promotion.label, operator: 'In', values: [tenantHash(ctx.tenant)] },
                      ],
                    },
                  ],
                },
              },
            },
          }
        : {}),
      restartPolicy: s.restartPolicy ?? 'Always',
      ...(s.terminationGracePeriodSeconds !== undefined
        ? { terminationGracePeriodSeconds: s.terminationGracePeriodSeconds }
        : {}),
      ...(s.activeDeadlineSeconds !== undefined ? { activeDeadlineSeconds: s.activeDeadlineSeconds } : {}),
      ...(s.securityContext ? { securityContext: s.securityContext } : {}),
      // Host namespaces pass only where refuse() allowed them (a privileged tenant's own node).
      ...(s.hostNetwork ? { hostNetwork: true } : {}),
      ...(s.hostPID ? { hostPID: true } : {}),
      ...(s.hostIPC ? { hostIPC: true } : {}),
      ...(s.shareProcessNamespace ? { shareProcessNamespace: true } : {}),
      ...(s.hostAliases ? { hostAliases: s.hostAliases } : {}),
      ...(s.setHostnameAsFQDN !== undefined ? { setHostnameAsFQDN: s.setHostnameAsFQDN } : {}),
      ...(s.os ? { os: s.os } : {}),
      ...tenantDns(ctx, pod),
      // The host kubelet would add the host's Services: the tenant's are in `env` instead.
      enableServiceLinks: false,
      hostname: podHostname(s.hostname ?? name),
      ...(s.subdomain ? { subdomain: s.subdomain } : {}),
      automountServiceAccountToken: false,
    },
    {
      ...(ctx.hostsImage ? { image: ctx.hostsImage } : {}),
      hostNamespace: ctx.hostNamespace,
      namespace: ns,
      clusterDomain: ctx.clusterDomain ?? 'cluster.local',
    },
  );
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: hostName(ns, name),
      namespace: ctx.hostNamespace,
      labels: { ...copiedLabels, ...originLabels({ tenant: ctx.tenant, namespace: ns }) },
      annotations: {
        // The tenant's own annotations as well: the downward API and `fieldRef`s read them there.
        ...copiedAnnotations,
        ...originAnnotations({ tenant: ctx.tenant, namespace: ns, name, uid: pod.metadata!.uid! }),
        [PodAnnotation.namespace]: ns,
        [PodAnnotation.name]: name,
        [PodAnnotation.uid]: pod.metadata!.uid!,
        [PodAnnotation.node]: s.nodeName!,
        ...(confined ? { [PodAnnotation.pinned]: 'true' } : {}),
        ...(rewritten ? { [PodAnnotation.hostsRewritten]: 'true' } : {}),
        ...(leftOff.length > 0 ? { [PodAnnotation.tenantOnlyResources]: leftOff.join(',') } : {}),
        [PodAnnotation.tenantKeys]: JSON.stringify({
          labels: Object.keys(copiedLabels).sort(),
          annotations: Object.keys(copiedAnnotations).sort(),
        }),
      },
    },
    spec,
  };
}

/**
 * The host form of the tenant pod's ephemeral containers (added by `kubectl debug` to a running
 * pod): references translated as for any container. Refused as the pod would be.
 */
export function hostEphemeralContainers(
  ctx: TenantContext,
  pod: V1Pod,
  hostNode: string | undefined,
  services: readonly V1Service[] = [],
): V1EphemeralContainer[] {
  // A running virtual-node pod may be on a shared node: no host access joins it there.
  if (refuse(ctx.podSecurity, pod, hostNode).confined)
    throw new PodRefused(
      'HostAccessForbidden',
      'an ephemeral container may not add host access to a pod of the virtual node',
    );
  const inherited = tenantServiceEnv(ctx, pod, services);
  const ns = pod.metadata!.namespace!;
  return (pod.spec?.ephemeralContainers ?? []).map(
    (c) => container(ns, c as V1Container, inherited) as V1EphemeralContainer,
  );
}

/** A refused pod fails in the tenant the way a kubelet's admission failure does. */
export function refusedStatus(err: PodRefused, now: Date): V1PodStatus {
  const condition: V1PodCondition = {
    type: 'Ready',
    status: 'False',
    reason: err.reason,
    message: err.message,
    lastTransitionTime: now,
  };
  return { phase: 'Failed', reason: err.reason, message: err.message, conditions: [condition] };
}

function copyMeta(ctx: TenantContext, o: { metadata?: V1ConfigMap['metadata'] }) {
  const ns = o.metadata!.namespace!;
  const name = o.metadata!.name!;
  return {
    name: hostName(ns, name),
    namespace: ctx.hostNamespace,
    labels: { ...tenantLabels(o.metadata?.labels), ...originLabels({ tenant: ctx.tenant, namespace: ns }) },
    annotations: originAnnotations({ tenant: ctx.tenant, namespace: ns, name, uid: o.metadata!.uid! }),
  };
}

export function hostConfigMapFor(ctx: TenantContext, cm: V1ConfigMap): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: copyMeta(ctx, cm),
    ...(cm.data ? { data: cm.data } : {}),
    ...(cm.binaryData ? { binaryData: cm.binaryData } : {}),
  };
}

/** Service-account token Secrets are never copied (the host pod gets its own, bound token). */
export function hostSecretFor(ctx: TenantContext, secret: V1Secret): V1Secret | undefined {
  if (secret.type === 'kubernetes.io/service-account-token') return undefined;
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: copyMeta(ctx, secret),
    type: secret.type ?? 'Opaque',
    ...(secret.data ? { data: secret.data } : {}),
  };
}

/** Same content, ignoring metadata the API server owns. */
export function sameData(a: V1ConfigMap | V1Secret, b: V1ConfigMap | V1Secret): boolean {
  const pick = (o: V1ConfigMap | V1Secret) =>
    JSON.stringify([o.data ?? {}, (o as V1ConfigMap).binaryData ?? {}, (o as V1Secret).type ?? '']);
  return pick(a) === pick(b);
}

/**
 * The host Service for a tenant Service: same ports, a selector on the translated pods of the
 * same tenant namespace. Services without a selector and ExternalName services stay tenant-only.
 */
export function hostServiceFor(ctx: TenantContext, svc: V1Service): V1Service | undefined {
  const s = svc.spec;
  if (!s || s.type === 'ExternalName') return undefined;
  const selectorless = !s.selector || Object.keys(s.selector).length === 0;
  // The operator's own selector-less Services (the tenant's kube-dns) already have their address.
  if (selectorless && svc.metadata?.labels?.[OPERATOR_LABEL] === OPERATOR) return undefined;
  const ns = svc.metadata!.namespace!;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: copyMeta(ctx, svc),
    spec: {
      // A NodePort (or LoadBalancer, served as NodePort here) answers on the host nodes' ports,
      // which the tenant Service then takes.
      type: s.type === 'NodePort' || s.type === 'LoadBalancer' ? 'NodePort' : 'ClusterIP',
      ...(s.clusterIP === 'None' ? { clusterIP: 'None' } : {}),
      // Without a selector, the endpoints are the tenant's own EndpointSlices, mirrored.
      ...(selectorless ? {} : { selector: hostSelector(ctx, ns, s.selector!) }),
      ports: (s.ports ?? []).map((p) => ({
        ...(p.name ? { name: p.name } : {}),
        protocol: p.protocol ?? 'TCP',
        port: p.port,
        ...(p.targetPort !== undefined ? { targetPort: p.targetPort } : {}),
      })),
      ...(s.publishNotReadyAddresses ? { publishNotReadyAddresses: true } : {}),
      ...(s.sessionAffinity ? { sessionAffinity: s.sessionAffinity } : {}),
      ...(s.sessionAffinity === 'ClientIP' && s.sessionAffinityConfig
        ? { sessionAffinityConfig: s.sessionAffinityConfig }
        : {}),
    },
  };
}

/** The label the operator puts on tenant objects it manages itself (not mirrored). */
export const OPERATOR_LABEL = 'kosmos.io/managed-by';
export const OPERATOR = 'kosmos-vc';

/**
 * The host copy of a tenant EndpointSlice of a Service without a selector, for the host Service
 * `hostService`. Only addresses in `allowed` ranges (this host's pods and node) are kept: a tenant
 * may write any address into its slices, and the host's kube-proxy would send traffic there.
 */
export function hostEndpointSliceFor(
  ctx: TenantContext,
  slice: V1EndpointSlice,
  hostService: string,
  allowed: readonly string[],
): V1EndpointSlice {
  const ok = (ip: string) => allowed.some((cidr) => cidrContains(cidr, ip));
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      ...copyMeta(ctx, slice),
      labels: {
        ...copyMeta(ctx, slice).labels,
        'kubernetes.io/service-name': hostService,
        'endpointslice.kubernetes.io/managed-by': MANAGER,
      },
    },
    addressType: slice.addressType,
    endpoints: (slice.endpoints ?? [])
      .map((e) => ({
        addresses: e.addresses.filter(ok),
        ...(e.conditions ? { conditions: e.conditions } : {}),
      }))
      .filter((e) => e.addresses.length > 0),
    ...(slice.ports ? { ports: slice.ports } : {}),
  };
}

/** The parts of a host Service clusterTree owns, for change detection. */
export function serviceShape(svc: V1Service): string {
  const affinity = svc.spec?.sessionAffinity ?? 'None';
  return JSON.stringify([
    svc.spec?.type ?? 'ClusterIP',
    svc.spec?.selector ?? {},
    // The API server defaults protocol and targetPort: compare with the defaults applied.
    svc.spec?.ports?.map((p) => [p.name ?? '', p.protocol ?? 'TCP', p.port, p.targetPort ?? p.port]),
    affinity,
    affinity === 'ClientIP' ? (svc.spec?.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800) : null,
    svc.spec?.publishNotReadyAddresses ?? false,
  ]);
}
