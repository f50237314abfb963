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

export const OriginLabel = {
  managedBy: 'app.kubernetes.io/managed-by',
  tenant: 'kosmos.io/tenant',
  tenantNamespace: 'kosmos.io/tenant-namespace',
} as const;
export const ORIGIN_ANNOTATION = 'kosmos.io/origin';
const MANAGER = 'kosmos-vc-clustertree';

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

/** Labels that select a tenant's host objects; every value fits a label. */
export function originLabels(o: Pick<Origin, 'tenant' | 'namespace'>): Record<string, string> {
  return {
    [OriginLabel.managedBy]: MANAGER,
    [OriginLabel.tenant]: hash(o.tenant.uid, 16),
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
  return l[OriginLabel.managedBy] === MANAGER && l[OriginLabel.tenant] === hash(tenant.uid, 16);
}
