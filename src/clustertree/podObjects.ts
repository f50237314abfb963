/**
 * Host objects that belong to one tenant pod (its token Secret, trust-bundle ConfigMap and
 * pod-certificate Secret): written whole, created or replaced, as the cache last saw them.
 */
import type { CoreV1Api, V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import { ignoreStatus } from '../api/kubeClient.js';

/** Replaces the object when the cache has it, else creates it (a racing create is fine). */
export async function putPodSecret(core: CoreV1Api, body: V1Secret, exists: boolean): Promise<void> {
  const { name, namespace } = body.metadata as { name: string; namespace: string };
  if (exists) await core.replaceNamespacedSecret({ name, namespace, body });
  else await core.createNamespacedSecret({ namespace, body }).catch(ignoreStatus(409));
}

/** As putPodSecret, for a ConfigMap. */
export async function putPodConfigMap(core: CoreV1Api, body: V1ConfigMap, exists: boolean): Promise<void> {
  const { name, namespace } = body.metadata as { name: string; namespace: string };
  if (exists) await core.replaceNamespacedConfigMap({ name, namespace, body });
  else await core.createNamespacedConfigMap({ namespace, body }).catch(ignoreStatus(409));
}
