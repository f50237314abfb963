/**
 * The tenant's nodes, as pure translations: a promoted host node as the tenant sees it, the
 * virtual node standing for promoted CPU and memory, and what of them changes only with the host.
 * Both point the tenant apiserver's kubelet calls at clusterTree's kubelet endpoint.
 */
import type { V1Node, V1NodeStatus, V1Taint } from '@kubernetes/client-node';
import { parseQuantity } from '../api/virtualCluster.js';
import { MANAGER, RESERVED_PREFIX } from './naming.js';
import { TENANT_NODE_LABEL } from './translate.js';

/** Where a tenant node's kubelet API answers: clusterTree's kubelet endpoint. */
export interface KubeletEndpoint {
  address: string;
  port: number;
  /** InternalDNS: the host node keeps its InternalIP. InternalIP (older tenants): the endpoint's. */
  addressType?: 'InternalIP' | 'InternalDNS';
}

/**
 * Node addresses and daemon endpoints that send the tenant apiserver's kubelet calls to clusterTree:
 * the endpoint is the node's InternalDNS address, which the tenant apiserver prefers. InternalIP
 * stays the host node's own (what pods with host ports and host networking answer on); a node
 * without one (the virtual node) shows the endpoint's.
 */
function endpointStatus(
  name: string,
  kubelet: KubeletEndpoint | undefined,
  hostIP: string | undefined,
): Partial<V1NodeStatus> {
  if (!kubelet) return {};
  if (kubelet.addressType !== 'InternalDNS')
    return {
      addresses: [
        { type: 'InternalIP', address: kubelet.address },
        { type: 'Hostname', address: name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: kubelet.port } },
    };
  return {
    addresses: [
      { type: 'InternalIP', address: hostIP ?? kubelet.address },
      { type: 'InternalDNS', address: kubelet.address },
      { type: 'Hostname', address: name },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: kubelet.port } },
  };
}

/**
 * Taints that say a node's health (not-ready, unreachable, memory-pressure, unschedulable,
 * out-of-service, ...): the host's node-lifecycle controller, or its admin, sets them on the host
 * node. A tenant's controller-manager runs no node-lifecycle controller (ADR 12, decision 19):
 * its promoted nodes carry their host node's, which the tenant's taint-eviction controller and
 * scheduler act on as on any node's. A tenant's own taints under this prefix are not kept.
 */
export const HEALTH_TAINT_PREFIX = 'node.kubernetes.io/';

const isHealthTaint = (t: V1Taint) => t.key.startsWith(HEALTH_TAINT_PREFIX);

/** A node's health taints as text that is equal when they are the same. */
export function healthTaintsShape(taints: V1Taint[] | undefined): string {
  return JSON.stringify(
    (taints ?? [])
      .filter(isHealthTaint)
      .map((t) => [t.key, t.value ?? '', t.effect, t.timeAdded ? new Date(t.timeAdded).toISOString() : ''])
      .sort((a, b) => a.join('\0').localeCompare(b.join('\0'))),
  );
}

/** The tenant node's taints with its host node's health taints in place of its own: the tenant's others kept. */
export function withHealthTaints(tenant: V1Taint[] | undefined, host: V1Taint[] | undefined): V1Taint[] {
  return [...(tenant ?? []).filter((t) => !isHealthTaint(t)), ...(host ?? []).filter(isHealthTaint)];
}

/**
 * The tenant's view of a promoted host node: its name, OS/arch labels, capacity, conditions and
 * health taints.
 */
export function tenantNodeFor(host: V1Node, now: Date, kubelet?: KubeletEndpoint): V1Node {
  const labels = Object.fromEntries(
    Object.entries(host.metadata?.labels ?? {}).filter(
      ([k]) => !k.startsWith(RESERVED_PREFIX) && !k.startsWith('node-role.kubernetes.io/'),
    ),
  );
  const conditions = (host.status?.conditions ?? []).map((c) => ({ ...c, lastHeartbeatTime: now }));
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: host.metadata!.name!, labels: { ...labels, [TENANT_NODE_LABEL]: MANAGER } },
    spec: { taints: withHealthTaints([], host.spec?.taints) },
    status: {
      ...(host.status?.capacity ? { capacity: host.status.capacity } : {}),
      ...(host.status?.allocatable ? { allocatable: host.status.allocatable } : {}),
      conditions,
      ...(host.status?.addresses ? { addresses: host.status.addresses } : {}),
      ...(host.status?.nodeInfo ? { nodeInfo: host.status.nodeInfo } : {}),
      ...endpointStatus(
        host.metadata!.name!,
        kubelet,
        host.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
      ),
    },
  };
}

/**
 * The virtual node that stands for promoted CPU and memory. `address`, where there is one, is a
 * host node address where the host's node ports answer: its InternalIP, as a node's address is
 * where its NodePorts and host ports are reached.
 */
export function virtualNode(
  name: string,
  resources: { cpu: string; memory: string },
  now: Date,
  kubelet?: KubeletEndpoint,
  address?: string,
): V1Node {
  const capacity = { cpu: resources.cpu, memory: resources.memory, pods: '10000' };
  const ready = {
    type: 'Ready',
    status: 'True',
    reason: 'ClusterTreeReady',
    message: 'promoted resources served by clusterTree',
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        // Set by a kubelet (and, before ADR 12 decision 19, the tenant's node-lifecycle
        // controller): older manifests select nodes by them.
        'beta.kubernetes.io/os': 'linux',
        'beta.kubernetes.io/arch': 'amd64',
        'node.kubernetes.io/instance-type': 'kosmos-virtual',
        [TENANT_NODE_LABEL]: MANAGER,
      },
    },
    status: {
      capacity,
      allocatable: capacity,
      conditions: [ready],
      nodeInfo: {
        architecture: 'amd64',
        operatingSystem: 'linux',
        kubeletVersion: 'kosmos-vc-clustertree',
        kubeProxyVersion: '',
        bootID: '',
        containerRuntimeVersion: '',
        kernelVersion: '',
        machineID: '',
        osImage: '',
        systemUUID: '',
      },
      ...endpointStatus(name, kubelet, address),
    },
  };
}

/**
 * Whether a tenant node's status differs from what clusterTree writes into it (`want`), heartbeat
 * and transition times aside: it is written only then (ADR 12, decision 20). Only the keys
 * clusterTree writes are compared, value by value: a merge patch never removes what the tenant
 * added (an extended resource it advertises); the API server gives quantities in canonical form
 * (`10000` pods as `10k`); and the informers' objects have their keys in the order of
 * client-node's models after a list, of the API server's JSON after a watch event. Conditions
 * are a list clusterTree replaces whole.
 */
export function statusDiffers(have: V1Node, want: V1Node): boolean {
  const h = have.status ?? {};
  const w = want.status ?? {};
  const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  const keysSame = (a: object | undefined, b: object | undefined) =>
    Object.entries(b ?? {}).every(([k, v]) => same((a as Record<string, unknown> | undefined)?.[k], v));
  const quantitiesSame = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) =>
    Object.entries(b ?? {}).every(
      ([k, v]) => a?.[k] === v || (a?.[k] !== undefined && parseQuantity(a[k]) === parseQuantity(v)),
    );
  const conditions = (s: V1NodeStatus) =>
    (s.conditions ?? []).map((c) => [c.type, c.status, c.reason ?? '', c.message ?? '']);
  const addresses = (s: V1NodeStatus) => (s.addresses ?? []).map((a) => [a.type, a.address]);
  return !(
    quantitiesSame(h.capacity, w.capacity) &&
    quantitiesSame(h.allocatable, w.allocatable) &&
    keysSame(h.nodeInfo, w.nodeInfo) &&
    same(conditions(h), conditions(w)) &&
    same(addresses(h), addresses(w)) &&
    (h.daemonEndpoints?.kubeletEndpoint?.Port ?? 0) === (w.daemonEndpoints?.kubeletEndpoint?.Port ?? 0)
  );
}

/**
 * `want`'s status with the transition time the tenant node shows for each condition whose status
 * it keeps: a transition is a change of status. For the virtual node, whose Ready is made with the
 * time of each sync; a promoted node's times are its host node's.
 */
export function withTransitionTimesKept(want: V1NodeStatus, have: V1NodeStatus | undefined): V1NodeStatus {
  const before = new Map((have?.conditions ?? []).map((c) => [c.type, c]));
  return {
    ...want,
    ...(want.conditions
      ? {
          conditions: want.conditions.map((c) => {
            const b = before.get(c.type);
            return b?.status === c.status && b.lastTransitionTime
              ? { ...c, lastTransitionTime: b.lastTransitionTime }
              : c;
          }),
        }
      : {}),
  };
}
