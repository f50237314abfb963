/** The operator's clients of a tenant's API server, and the ways it writes there. */
import {
  CoreV1Api,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { reuseConnections, statusCode } from '../api/kubeClient.js';
import { type ControlPlaneLayout } from '../runtime/controlPlane.js';
import { operatorKubeconfig } from '../runtime/kubeconfigs.js';
import { FIELD_MANAGER } from './hostCluster.js';

/** The tenant's admin clients, from the kubeconfig the control-plane steps wrote. */
export function tenantAdmin(l: ControlPlaneLayout): { core: CoreV1Api; objects: KubernetesObjectApi } {
  const kc = new KubeConfig();
  kc.loadFromFile(operatorKubeconfig(l));
  reuseConnections(kc);
  return { core: kc.makeApiClient(CoreV1Api), objects: KubernetesObjectApi.makeApiClient(kc) };
}

/** Runs `fn` again when it loses a race with another writer (409), a few times. */
export async function retryOnConflict<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (statusCode(e) !== 409 || attempt >= 5) throw e;
    }
  }
}

/** What other objects need to exist first: a token Secret names its service account. */
const FIRST_KINDS = new Set(['Namespace', 'ServiceAccount']);

/**
 * Server-side applies each object, as the operator's field manager: namespaces and service
 * accounts first, in order, then the rest at once (one round trip's wait instead of one each).
 */
export async function apply(api: KubernetesObjectApi, objects: KubernetesObject[]): Promise<void> {
  const one = (o: KubernetesObject) =>
    api.patch(o, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
  for (const o of objects.filter((o) => FIRST_KINDS.has(o.kind ?? ''))) await one(o);
  const rest = await Promise.allSettled(objects.filter((o) => !FIRST_KINDS.has(o.kind ?? '')).map(one));
  const failed = rest.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}
