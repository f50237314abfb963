/**
 * Extended resources between a tenant pod and its host pod: which a virtual-node pod keeps from
 * the host (none: a slice is CPU and memory), and how the host pod records what it left off.
 */
import type { V1Pod, V1ResourceRequirements } from '@kubernetes/client-node';

/** The host pod's annotation naming the extended resources left off it (comma-separated). */
export const TENANT_ONLY_RESOURCES = 'kosmos.io/tenant-only-resources';

/**
 * Whether a resource name is an extended resource, as Kubernetes defines it: qualified with a
 * domain other than kubernetes.io's, and not a quota's `requests.` name.
 */
export function isExtendedResource(name: string): boolean {
  return name.includes('/') && !name.includes('kubernetes.io/') && !name.startsWith('requests.');
}

/**
 * The extended resources a virtual-node pod asks for. A tenant can advertise any extended
 * resource on its nodes (it owns their status, as a device plugin or an admin does on a real
 * node), and its scheduler accounts for it. On a promoted node the host kubelet gets the request
 * as it is (a kubelet ignores, for admission, an extended resource its node lacks, and its device
 * plugins serve the ones it has). A slice promises CPU and memory only: asking the host scheduler
 * for the rest would leave the pod Pending where no host node has it, and give the tenant host
 * devices beyond its slice where one does. So a virtual-node pod's are tenant bookkeeping only.
 */
export function tenantOnlyResources(pod: V1Pod): string[] {
  const out = new Set<string>();
  for (const c of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])])
    for (const list of [c.resources?.requests, c.resources?.limits])
      for (const name of Object.keys(list ?? {})) if (isExtendedResource(name)) out.add(name);
  return [...out].sort();
}

/** The names a host pod records as left off (PodAnnotation.tenantOnlyResources). */
export function leftOffResources(hostPod: V1Pod | undefined): Set<string> {
  const raw = hostPod?.metadata?.annotations?.[TENANT_ONLY_RESOURCES];
  return new Set(raw ? raw.split(',') : []);
}

/** Resource requirements without the named resources. */
export function withoutResources(
  r: V1ResourceRequirements | undefined,
  names: ReadonlySet<string>,
): V1ResourceRequirements | undefined {
  if (!r || names.size === 0) return r;
  const keep = (list: Record<string, string> | undefined) =>
    list && Object.fromEntries(Object.entries(list).filter(([k]) => !names.has(k)));
  return {
    ...r,
    ...(r.requests ? { requests: keep(r.requests)! } : {}),
    ...(r.limits ? { limits: keep(r.limits)! } : {}),
  };
}
