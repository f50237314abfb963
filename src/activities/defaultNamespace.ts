/** What a pod in a new tenant's `default` namespace needs before its controllers run (ADR 12). */
import type { CoreV1Api } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { ignoreStatus } from '../api/kubeClient.js';
import { PkiFile, certPath } from '../pki/controlPlanePki.js';
import { pkiDir, type ControlPlaneLayout } from '../runtime/controlPlane.js';

/** What the controller-manager's root-CA publisher writes on its ConfigMaps (its own words). */
const ROOT_CA_DESCRIPTION =
  'Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. ' +
  'No other usage is guaranteed across distributions of Kubernetes clusters.';

/**
 * Ready means a pod can be created and started in `default` at once: the namespace needs its
 * `default` service account and the `kube-root-ca.crt` ConfigMap every pod's token volume
 * projects. The controller-manager's controllers make both, but only seconds after its process
 * starts (it first gives each controller a client and a token of its own). Whichever is missing,
 * the operator makes as that controller would (the same name, data and annotation, from the same
 * CA file), and the controller finds it made (ADR 12). What exists is only read: a restored or
 * woken tenant's objects never pass admission again (a webhook of the tenant could not answer
 * yet). Until the API server has made `default`, or while anything refuses, it tries again.
 */
export async function defaultNamespaceReady(
  l: ControlPlaneLayout,
  timeoutMs: number,
  admin: (l: ControlPlaneLayout) => { core: CoreV1Api },
  until: (what: string, timeoutMs: number, check: () => Promise<boolean>) => Promise<void>,
): Promise<void> {
  const { core } = admin(l);
  const namespace = 'default';
  const rootCA = await readFile(certPath(pkiDir(l), PkiFile.ca), 'utf8');
  const ensure = async (read: () => Promise<unknown>, create: () => Promise<unknown>) => {
    if ((await read().catch(ignoreStatus(404))) === undefined) await create().catch(ignoreStatus(409));
  };
  let last = '';
  try {
    await until('the default namespace ready for pods', timeoutMs, async () => {
      try {
        await ensure(
          () => core.readNamespacedServiceAccount({ name: 'default', namespace }),
          () => core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: 'default' } } }),
        );
        await ensure(
          () => core.readNamespacedConfigMap({ name: 'kube-root-ca.crt', namespace }),
          () =>
            core.createNamespacedConfigMap({
              namespace,
              body: {
                metadata: {
                  name: 'kube-root-ca.crt',
                  annotations: { 'kubernetes.io/description': ROOT_CA_DESCRIPTION },
                },
                data: { 'ca.crt': rootCA },
              },
            }),
        );
        return true;
      } catch (e) {
        last = e instanceof Error ? e.message : String(e);
        return false;
      }
    });
  } catch (e) {
    throw new Error(`${(e as Error).message}${last ? ` (last: ${last})` : ''}`);
  }
}
