/**
 * What the CRD (config/crd/virtualclusters.kosmos.io.yaml) defaults in a VirtualCluster's spec.
 * The API server adds these to every object it serves, objects stored before a default existed
 * included. No zod here: workflow code imports it. A new default here also goes into the
 * workflow's spec comparison (src/workflows/spec.ts), behind a patch of its own.
 */

/** The service range of a tenant that names none (the warm pool's slots are made for it). */
export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';
/** spec.podSecurity when absent. */
export const DEFAULT_POD_SECURITY = 'baseline';
