/**
 * Service-account tokens of tenant pods (ADR 6): a TokenRequest bound to the tenant pod, in a host
 * Secret the host pod mounts in place of the projected token, renewed before it expires.
 */
import type { CoreV1Api, KubernetesObject, ListWatch, V1Pod, V1Secret } from '@kubernetes/client-node';
import { ignoreStatus } from '../api/kubeClient.js';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import { MANAGER, OriginLabel, tenantHash, tokenSecretName } from './naming.js';
import { putPodSecret } from './podObjects.js';
import { PodAnnotation, type TokenRequestSpec } from './translate.js';

const TOKEN_EXPIRES = 'kosmos.io/token-expires';
/** On a token Secret: the tenant pod it belongs to, `ns/name`. */
const TOKEN_FOR = 'kosmos.io/token-for';

/** The tenant pod (`[namespace, name]`) a host token Secret belongs to, if it is one. */
export function tokenOwner(secret: KubernetesObject): [string, string] | undefined {
  const owner = secret.metadata?.annotations?.[TOKEN_FOR];
  return owner ? (owner.split('/') as [string, string]) : undefined;
}

export interface TokenSyncDeps {
  tenant: VirtualClusterRef;
  hostNamespace: string;
  tokenExpirationSeconds: number;
  tenantCore: CoreV1Api;
  hostCore: CoreV1Api;
  hostSecrets: ListWatch<V1Secret>;
}

export class TokenSync {
  constructor(private readonly d: TokenSyncDeps) {}

  /**
   * Bound tokens for the tenant pod's service account, one per audience and lifetime its
   * projections ask for, in one host Secret its host pod mounts (each under its own key).
   */
  async issue(pod: V1Pod, wants: readonly TokenRequestSpec[]): Promise<void> {
    if (wants.length === 0) return;
    const ns = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const secretName = tokenSecretName(ns, name);
    const existing = this.d.hostSecrets.get(secretName, this.d.hostNamespace);
    const expires = Date.parse(existing?.metadata?.annotations?.[TOKEN_EXPIRES] ?? '');
    const lifetime = (w: TokenRequestSpec) =>
      Math.max(w.expirationSeconds ?? this.d.tokenExpirationSeconds, 600);
    const shortest = Math.min(...wants.map(lifetime));
    const refreshBefore = Date.now() + (shortest * 1000) / 5;
    if (
      existing &&
      expires > refreshBefore &&
      existing.metadata?.annotations?.[PodAnnotation.uid] === pod.metadata!.uid &&
      wants.every((w) => existing.data?.[w.key] !== undefined)
    )
      return;
    const data: Record<string, string> = {};
    let firstExpiry = Infinity;
    for (const want of wants) {
      const tr = await this.d.tenantCore.createNamespacedServiceAccountToken({
        name: want.serviceAccount,
        namespace: ns,
        body: {
          spec: {
            // The audience the projection asked for; none means the tenant API server's own.
            audiences: want.audience ? [want.audience] : [],
            expirationSeconds: lifetime(want),
            boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name, uid: pod.metadata!.uid! },
          },
        },
      });
      const { token, expirationTimestamp } = tr.status ?? {};
      if (!token || !expirationTimestamp)
        throw new Error(
          `the TokenRequest for service account ${ns}/${want.serviceAccount} returned no token`,
        );
      data[want.key] = Buffer.from(token).toString('base64');
      firstExpiry = Math.min(firstExpiry, new Date(expirationTimestamp).getTime());
    }
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: secretName,
        namespace: this.d.hostNamespace,
        labels: { [OriginLabel.managedBy]: MANAGER, [OriginLabel.tenant]: tenantHash(this.d.tenant) },
        annotations: {
          [TOKEN_FOR]: `${ns}/${name}`,
          [PodAnnotation.uid]: pod.metadata!.uid!,
          // The first of them to expire: all are renewed together.
          [TOKEN_EXPIRES]: new Date(firstExpiry).toISOString(),
        },
      },
      type: 'Opaque',
      data,
    };
    await putPodSecret(this.d.hostCore, body, existing !== undefined);
  }

  async remove(ns: string, pod: string): Promise<void> {
    const secretName = tokenSecretName(ns, pod);
    if (!this.d.hostSecrets.get(secretName, this.d.hostNamespace)) return;
    await this.d.hostCore
      .deleteNamespacedSecret({ name: secretName, namespace: this.d.hostNamespace })
      .catch(ignoreStatus(404));
  }
}
