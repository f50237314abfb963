/**
 * Comparing desired specs in workflow code. A spec delivered by the watcher carries the CRD's
 * defaults, which the API server adds on every read; a workflow started before a default
 * existed holds its spec without it. Compared as they are, the first new generation delivered
 * after such an upgrade (the operator's own spec.kubeconfig write, say) would look like a
 * change: an idle tenant would wake and a Failed one provision again.
 *
 * The comparison is part of the workflow's history: a default added to `withDefaults` later
 * changes which generations count as a change, and needs a patch id of its own (patches.ts),
 * as SPEC_DEFAULTS_PATCH guards these two.
 */
import equal from 'fast-deep-equal';
import { DEFAULT_POD_SECURITY, DEFAULT_SERVICE_CIDR } from '../api/defaults.js';
import type { DesiredSpec } from './definitions.js';

/** The spec as the API server serves it today: every CRD default filled in where absent. */
function withDefaults(spec: DesiredSpec): DesiredSpec {
  return {
    ...spec,
    serviceCIDR: spec.serviceCIDR ?? DEFAULT_SERVICE_CIDR,
    podSecurity: spec.podSecurity ?? DEFAULT_POD_SECURITY,
  };
}

/** Whether two specs ask for the same tenant: the CRD's defaults applied, key order ignored. */
export function sameDesiredSpec(a: DesiredSpec, b: DesiredSpec): boolean {
  return equal(withDefaults(a), withDefaults(b));
}

/** Whether two specs promote the same (key order ignored). */
export function samePromotion(a: DesiredSpec, b: DesiredSpec): boolean {
  return equal(a.promoteResources ?? {}, b.promoteResources ?? {});
}
