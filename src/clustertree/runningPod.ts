/**
 * A running pod on both sides: what of a tenant's changes reaches the host pod (metadata, images,
 * deadline, in-place resizes) and what of the host pod's status the tenant sees. Pure functions;
 * the controller decides when to call them.
 */
import type {
  V1Container,
  V1ContainerStatus,
  V1Pod,
  V1PodCondition,
  V1PodStatus,
  V1ResourceRequirements,
} from '@kubernetes/client-node';
import { parseQuantity } from '../api/virtualCluster.js';
import { HOSTS_CONTAINER } from './etcHosts.js';
import { leftOffResources, withoutResources } from './resources.js';
import { PodAnnotation, tenantAnnotations, tenantLabels } from './translate.js';

/**
 * Whether a host container's resources are the tenant container's: equal quantities, and a
 * request or limit only the host has counts when it is not zero (the host namespace's
 * LimitRange gives every container zero requests where the tenant asked for none).
 */
export function sameResources(
  tenant: V1ResourceRequirements | undefined,
  host: V1ResourceRequirements | undefined,
  leftOff: ReadonlySet<string> = new Set(),
): boolean {
  for (const kind of ['requests', 'limits'] as const) {
    const t = tenant?.[kind] ?? {};
    const h = host?.[kind] ?? {};
    for (const key of new Set([...Object.keys(t), ...Object.keys(h)])) {
      if (leftOff.has(key)) continue;
      const tv = t[key];
      const hv = h[key];
      if (tv === hv) continue;
      if (tv === undefined && hv !== undefined && parseQuantity(hv) === 0) continue;
      // Quantities parseQuantity does not read (exponents, n/u) compare as written.
      if (tv === undefined || hv === undefined || !(parseQuantity(tv) === parseQuantity(hv))) return false;
    }
  }
  return true;
}

const FIXED_AT_CREATION = new Set<string>([PodAnnotation.hostsRewritten, PodAnnotation.tenantOnlyResources]);

/** Whether a host pod has the /etc/hosts rewrite (etcHosts.ts): a container that is not the tenant's. */
const rewritten = (pod: V1Pod | undefined): boolean =>
  pod?.metadata?.annotations?.[PodAnnotation.hostsRewritten] === 'true';

/** The tenant's containers of a host pod: without the /etc/hosts rewrite where it has one. */
const tenantContainers = (cs: V1Container[] | undefined, pod: V1Pod): V1Container[] =>
  (cs ?? []).filter((c) => !rewritten(pod) || c.name !== HOSTS_CONTAINER);

/**
 * An in-place resize a tenant asked for (its `resize` subresource), as the patch of the host pod's
 * `resize` subresource that asks the same of the host kubelet; undefined when they agree. The
 * extended resources left off the host pod stay off.
 */
export function hostPodResize(have: V1Pod, want: V1Pod): object | undefined {
  const leftOff = leftOffResources(have);
  const h = new Map(
    [...(have.spec?.initContainers ?? []), ...(have.spec?.containers ?? [])].map((c) => [
      c.name,
      c.resources,
    ]),
  );
  const changed = (list: V1Container[] | undefined) =>
    tenantContainers(list, want)
      .filter((c) => !sameResources(c.resources, h.get(c.name), leftOff))
      .map((c) => ({ name: c.name, resources: withoutResources(c.resources, leftOff) ?? {} }));
  const containers = changed(want.spec?.containers);
  const initContainers = changed(want.spec?.initContainers);
  if (containers.length === 0 && initContainers.length === 0) return undefined;
  return {
    spec: {
      ...(containers.length ? { containers } : {}),
      ...(initContainers.length ? { initContainers } : {}),
    },
  };
}

/**
 * What a tenant may change on a running pod, as a strategic merge patch that brings the host pod
 * there: labels and annotations (read by the downward API and fieldRefs), container and init
 * container images, activeDeadlineSeconds. Undefined when nothing differs.
 */
export function hostPodUpdate(have: V1Pod, want: V1Pod): object | undefined {
  const metadata: { labels?: Record<string, string | null>; annotations?: Record<string, string | null> } =
    {};
  // Only keys once copied from the tenant are removed: others are the host's (a CNI's, say).
  // A host pod from before the record (or with a damaged one): what the tenant could have given.
  const guess = () => ({
    labels: Object.keys(tenantLabels(have.metadata?.labels)),
    annotations: Object.keys(tenantAnnotations(have.metadata?.annotations)),
  });
  const copied = ((): { labels?: string[]; annotations?: string[] } => {
    const raw = have.metadata?.annotations?.[PodAnnotation.tenantKeys];
    if (raw === undefined) return guess();
    try {
      const parsed = JSON.parse(raw) as { labels?: unknown; annotations?: unknown };
      const keys = (x: unknown) =>
        Array.isArray(x) ? x.filter((k): k is string => typeof k === 'string') : [];
      return { labels: keys(parsed.labels), annotations: keys(parsed.annotations) };
    } catch {
      return guess();
    }
  })();
  for (const key of ['labels', 'annotations'] as const) {
    const h = have.metadata?.[key] ?? {};
    const w = want.metadata?.[key] ?? {};
    const diff: Record<string, string | null> = {};
    // Whether the host pod has the /etc/hosts rewrite, and which resources it left off, is fixed
    // at its creation.
    for (const [k, v] of Object.entries(w)) if (h[k] !== v && !FIXED_AT_CREATION.has(k)) diff[k] = v;
    for (const k of copied[key] ?? []) if (k in h && !(k in w)) diff[k] = null;
    if (Object.keys(diff).length > 0) metadata[key] = diff;
  }
  const images = (cs: V1Container[] | undefined, pod: V1Pod) =>
    tenantContainers(cs, pod).map((c) => ({ name: c.name, image: c.image }));
  const spec: { containers?: object[]; initContainers?: object[]; activeDeadlineSeconds?: number | null } =
    {};
  const differ = (key: 'containers' | 'initContainers') =>
    JSON.stringify(images(have.spec?.[key], have)) !== JSON.stringify(images(want.spec?.[key], want));
  if (differ('containers')) spec.containers = images(want.spec?.containers, want);
  if (differ('initContainers')) spec.initContainers = images(want.spec?.initContainers, want);
  if (have.spec?.activeDeadlineSeconds !== want.spec?.activeDeadlineSeconds)
    spec.activeDeadlineSeconds = want.spec?.activeDeadlineSeconds ?? null;
  const patch = {
    ...(Object.keys(metadata).length > 0 ? { metadata } : {}),
    ...(Object.keys(spec).length > 0 ? { spec } : {}),
  };
  return Object.keys(patch).length > 0 ? patch : undefined;
}

/**
 * Why a kubelet would reject this virtual-node pod: it was bound to the virtual node directly (by
 * `nodeName`, past the tenant scheduler), and the host scheduler cannot place its host pod because
 * the host ports it asks for are taken on every host node where it could otherwise go. A kubelet
 * rejects a pod bound to it whose ports are taken (it never waits for them), and the pod's
 * controller makes another. Undefined otherwise:
 * - a pod the tenant scheduler placed waits: that scheduler cannot see the host's ports, and would
 *   place each replacement on the virtual node again;
 * - a pod some node lacks CPU, memory or room for waits: the slice's quota, not a node's size, is
 *   what the tenant was promised, and those free up.
 */
export function hostPortRejection(host: V1Pod, tenant: V1Pod): string | undefined {
  if (host.spec?.nodeName || host.status?.phase !== 'Pending') return undefined;
  const bound = tenant.status?.conditions?.find((c) => c.type === 'PodScheduled');
  if (bound?.status === 'True') return undefined;
  const scheduled = host.status.conditions?.find((c) => c.type === 'PodScheduled');
  if (scheduled?.status !== 'False' || scheduled.reason !== 'Unschedulable') return undefined;
  const message = scheduled.message ?? '';
  if (!/didn't have free ports/.test(message) || /Insufficient |Too many pods/.test(message))
    return undefined;
  return "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";
}

const POD_STATUS_FIELDS = [
  'phase',
  'conditions',
  'hostIP',
  'hostIPs',
  'podIP',
  'podIPs',
  'startTime',
  'containerStatuses',
  'initContainerStatuses',
  'ephemeralContainerStatuses',
  'reason',
  'message',
] as const;

/**
 * What the tenant pod's status should say, taken from its host pod. Conditions the tenant's own
 * controllers set for the pod's readiness gates are kept, and Ready waits for them, as a kubelet
 * does.
 */
export function tenantPodStatus(host: V1Pod, tenant?: V1Pod): V1PodStatus {
  const out: Record<string, unknown> = {};
  const s = (host.status ?? {}) as Record<string, unknown>;
  for (const f of POD_STATUS_FIELDS) if (s[f] !== undefined) out[f] = s[f];
  const gates = (tenant?.spec?.readinessGates ?? []).map((g) => g.conditionType);
  // The tenant's own: its readiness gates, PodScheduled (its scheduler bound the pod; a
  // virtual-node pod the host scheduler has not placed yet is bound all the same), and
  // DisruptionTarget (set by the tenant's eviction API, preemption or taint manager, and read by
  // Job pod failure policies).
  // A tenant's PodScheduled is its scheduler's binding (True); a pod bound directly by `nodeName`
  // has none, and shows the host's (False while the host scheduler cannot place it).
  const owned = [...gates, 'PodScheduled', 'DisruptionTarget'];
  const kept = (tenant?.status?.conditions ?? []).filter(
    (c) => owned.includes(c.type) && (c.type !== 'PodScheduled' || c.status === 'True'),
  );
  if (gates.length > 0 || kept.length > 0) {
    const open = gates.filter((g) => !kept.some((c) => c.type === g && c.status === 'True'));
    const fromHost = ((out.conditions as V1PodCondition[] | undefined) ?? [])
      .filter((c) => !gates.includes(c.type) && !kept.some((k) => k.type === c.type))
      .map((c) =>
        c.type === 'Ready' && c.status === 'True' && open.length > 0
          ? {
              ...c,
              status: 'False',
              reason: 'ReadinessGatesNotReady',
              message: `corresponding condition of pod readiness gate "${open[0]}" does not exist or is not True`,
            }
          : c,
      );
    out.conditions = [...fromHost, ...kept];
  }
  // The host LimitRange's zero requests are the host's, not the tenant's: not in its statuses.
  // Nor is the init container that rewrites /etc/hosts.
  for (const key of ['containerStatuses', 'initContainerStatuses'] as const)
    if (Array.isArray(out[key]))
      out[key] = (out[key] as V1ContainerStatus[])
        .filter((c) => !rewritten(host) || c.name !== HOSTS_CONTAINER)
        .map((c) => withoutHostZeros(c, tenant));
  if (Array.isArray(out.initContainerStatuses) && out.initContainerStatuses.length === 0)
    delete out.initContainerStatuses;
  // Generations are each side's own: the tenant's is observed once the host kubelet has seen the
  // host pod's latest spec and that spec carries the tenant's images.
  const containers = (p: V1Pod | undefined) => [
    ...(p?.spec?.initContainers ?? []),
    ...(p?.spec?.containers ?? []),
  ];
  const hostByName = new Map(containers(host).map((c) => [c.name, c]));
  const leftOff = leftOffResources(host);
  const caughtUp =
    (host.status?.observedGeneration ?? 0) >= (host.metadata?.generation ?? 1) &&
    containers(tenant).every((c) => {
      const h = hostByName.get(c.name);
      return h !== undefined && h.image === c.image && sameResources(c.resources, h.resources, leftOff);
    });
  const generation = caughtUp ? tenant?.metadata?.generation : tenant?.status?.observedGeneration;
  delete out.observedGeneration;
  if (generation !== undefined) out.observedGeneration = generation;
  if (Array.isArray(out.conditions))
    out.conditions = (out.conditions as V1PodCondition[]).map(({ observedGeneration: _g, ...c }) =>
      generation !== undefined && _g !== undefined ? { ...c, observedGeneration: generation } : c,
    );
  return out;
}

/** A host container status without the resources only the host's LimitRange gave it (zeros). */
function withoutHostZeros(c: V1ContainerStatus, tenant: V1Pod | undefined): V1ContainerStatus {
  const spec = [...(tenant?.spec?.initContainers ?? []), ...(tenant?.spec?.containers ?? [])].find(
    (t) => t.name === c.name,
  );
  if (!spec) return c;
  const trim = (list: Record<string, string> | undefined, asked: Record<string, string> | undefined) =>
    list &&
    Object.fromEntries(
      Object.entries(list).filter(([k, v]) => asked?.[k] !== undefined || parseQuantity(v) !== 0),
    );
  const requests = spec.resources?.requests;
  return {
    ...c,
    ...(c.allocatedResources ? { allocatedResources: trim(c.allocatedResources, requests)! } : {}),
    ...(c.resources
      ? {
          resources: {
            ...c.resources,
            ...(c.resources.requests ? { requests: trim(c.resources.requests, requests)! } : {}),
            ...(c.resources.limits ? { limits: trim(c.resources.limits, spec.resources?.limits)! } : {}),
          },
        }
      : {}),
  };
}

/** True when `want` already holds in `have` (compared as JSON, dates as strings). */
export function statusMatches(have: V1PodStatus | undefined, want: V1PodStatus): boolean {
  const h = JSON.parse(JSON.stringify(have ?? {})) as Record<string, unknown>;
  const w = JSON.parse(JSON.stringify(want)) as Record<string, unknown>;
  return Object.keys(w).every((k) => JSON.stringify(h[k]) === JSON.stringify(w[k]));
}
