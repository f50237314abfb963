/**
 * Names of tenant objects on the host (groundwork for clusterTree, issue 3).
 *
 * Everything of one tenant lives in one host namespace of its own. Inside it, a tenant object
 * `<namespace>/<name>` becomes `<name>-x-<namespace>-<hash>`, cut so the whole stays a DNS label
 * of at most 63 characters. The hash covers the exact (namespace, name) pair, so names that only
 * look alike (`a` in `b-x-c` versus `a-x-b` in `c`) never collide, and neither do two tenants,
 * whose host namespaces differ. The origin is kept in labels (for selectors) and in an
 * annotation (the full names, which may be longer than a label value allows).
 */
import { createHash } from 'node:crypto';
import type { VirtualClusterRef } from '../api/virtualCluster.js';

export const MAX_NAME_LENGTH = 63;

/**
 * Every label and annotation key kosmos-vc sets lives under this prefix. Tenant labels under it
 * are dropped when an object is copied to the host, so a tenant can never forge ownership.
 */
export const RESERVED_PREFIX = 'kosmos.io/';

export const OriginLabel = {
  managedBy: 'kosmos.io/managed-by',
  tenant: 'kosmos.io/tenant',
  tenantNamespace: 'kosmos.io/tenant-namespace',
} as const;
export const ORIGIN_ANNOTATION = 'kosmos.io/origin';
export const MANAGER = 'kosmos-vc-clustertree';

/** On a promoted host node: which tenant owns it (label, a hash) and who that is (annotation). */
export const Promotion = {
  label: 'kosmos.io/promoted-to',
  annotation: 'kosmos.io/promoted-to-virtualcluster',
  taint: 'kosmos.io/promoted',
} as const;

/**
 * The host PriorityClass of pods that run on promoted resources (the virtual node): the tenant's
 * ResourceQuota selects them by it, so pods on promoted nodes are not charged to it.
 */
export const RESOURCES_PRIORITY_CLASS = 'kosmos-vc-promoted-resources';

/** The tenant's short, label-safe identity. */
export const tenantHash = (tenant: Pick<VirtualClusterRef, 'uid'>): string => hash(tenant.uid, 16);

/** The NoSchedule taint of the host nodes promoted to the tenant (its control-plane pods tolerate it). */
export const promotionTaint = (tenant: Pick<VirtualClusterRef, 'uid'>): { key: string; value: string } => ({
  key: Promotion.taint,
  value: tenantHash(tenant),
});

export interface Origin {
  tenant: VirtualClusterRef;
  namespace: string;
  name: string;
  uid: string;
}

const hash = (s: string, n: number): string => createHash('sha256').update(s).digest('hex').slice(0, n);

/** Lowercase, [a-z0-9-] only, no leading or trailing '-', at most `max` characters. */
function label(s: string, max: number): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .slice(0, max)
    .replace(/^-+|-+$/g, '');
}

/** `<readable prefix>-<hash>`, at most 63 characters, a valid DNS label. */
function withHash(readable: string, key: string): string {
  const h = hash(key, 10);
  const prefix = label(readable, MAX_NAME_LENGTH - h.length - 1);
  return prefix ? `${prefix}-${h}` : h;
}

/** The host namespace holding everything of one tenant; a re-created tenant gets a new one. */
export function hostNamespace(tenant: VirtualClusterRef): string {
  return withHash(
    `kvc-${tenant.namespace}-${tenant.name}`,
    `${tenant.namespace}/${tenant.name}/${tenant.uid}`,
  );
}

/** The host name of the tenant object `<namespace>/<name>` (inside the tenant's host namespace). */
export function hostName(namespace: string, name: string): string {
  return withHash(`${name}-x-${namespace}`, `${namespace}/${name}`);
}

/**
 * A host message about the host copy of `<namespace>/<name>` in tenant terms: its host name and
 * the host namespace become the tenant's, and it is cut to 1000 characters.
 */
export function tenantView(message: string, hostNamespace: string, namespace: string, name: string): string {
  return message
    .split(hostName(namespace, name))
    .join(name)
    .split(hostNamespace)
    .join(namespace)
    .slice(0, 1000);
}

/**
 * The host Secret holding the service-account token of tenant pod `<namespace>/<pod>`. The key
 * contains a '/', which no tenant name can, so it never collides with a mirrored Secret.
 */
export function tokenSecretName(namespace: string, pod: string): string {
  return withHash(`${pod}-token-x-${namespace}`, `${namespace}/${pod}/token`);
}

/** The host Secret holding a tenant pod's projected pod certificates (podCertificates.ts). */
export function podCertificateSecretName(namespace: string, pod: string): string {
  return withHash(`${pod}-certs-x-${namespace}`, `${namespace}/${pod}/pod-certificates`);
}

/** The host ConfigMap holding a tenant pod's projected ClusterTrustBundles (trustBundles.ts). */
export function trustBundleConfigMapName(namespace: string, pod: string): string {
  return withHash(`${pod}-ctb-x-${namespace}`, `${namespace}/${pod}/trust-bundles`);
}

/** A label value for any string: itself when it fits, else a readable prefix and a hash. */
export function labelValue(s: string): string {
  return s.length <= MAX_NAME_LENGTH && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(s) ? s : withHash(s, s);
}

/** Labels that select a tenant's host objects; every value fits a label. */
export function originLabels(o: Pick<Origin, 'tenant' | 'namespace'>): Record<string, string> {
  return {
    [OriginLabel.managedBy]: MANAGER,
    [OriginLabel.tenant]: tenantHash(o.tenant),
    [OriginLabel.tenantNamespace]: label(o.namespace, MAX_NAME_LENGTH),
  };
}

export function originAnnotations(o: Origin): Record<string, string> {
  return {
    [ORIGIN_ANNOTATION]: JSON.stringify({
      tenant: `${o.tenant.namespace}/${o.tenant.name}`,
      tenantUid: o.tenant.uid,
      namespace: o.namespace,
      name: o.name,
      uid: o.uid,
    }),
  };
}

/** clusterTree touches a host object only if this is true. */
export function ownedBy(
  meta: { labels?: Record<string, string> | undefined } | undefined,
  tenant: VirtualClusterRef,
): boolean {
  const l = meta?.labels ?? {};
  return l[OriginLabel.managedBy] === MANAGER && l[OriginLabel.tenant] === tenantHash(tenant);
}

/** kwok's mark on the nodes it simulates (their pods have no containers). */
export const KWOK_NODE_ANNOTATION = 'kwok.x-k8s.io/node';
