/**
 * Host copies of what the tenant's pods on the host use: a ConfigMap or Secret is copied once a
 * pod there refers to it, follows its updates, and goes when none does; the garbage collection
 * also removes the tokens, trust bundles and pod certificates of pods gone from both sides.
 */
import type {
  CoreV1Api,
  KubernetesObject,
  ListWatch,
  V1ConfigMap,
  V1Pod,
  V1Secret,
} from '@kubernetes/client-node';
import { ignoreStatus } from '../api/kubeClient.js';
import type { ClusterTreeConfig } from './config.js';
import { ORIGIN_ANNOTATION, hostName } from './naming.js';
import { podCertificatesOwner, type PodCertificateSync } from './podCertificates.js';
import { tokenOwner, type TokenSync } from './tokens.js';
import { hostConfigMapFor, hostSecretFor, podReferences, sameData, type TenantContext } from './translate.js';
import { trustBundlesOwner, type TrustBundleSync } from './trustBundles.js';

/** Origin namespace/name of a host object clusterTree made. */
export function origin(o: KubernetesObject): { namespace: string; name: string } | undefined {
  const raw = o.metadata?.annotations?.[ORIGIN_ANNOTATION];
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as { namespace?: unknown; name?: unknown };
    return typeof v.namespace === 'string' && typeof v.name === 'string'
      ? { namespace: v.namespace, name: v.name }
      : undefined;
  } catch {
    return undefined;
  }
}

export interface MirrorSyncDeps {
  cfg: ClusterTreeConfig;
  ctx: TenantContext;
  hostCore: CoreV1Api;
  tenantPods: ListWatch<V1Pod>;
  hostPods: ListWatch<V1Pod>;
  tenantConfigMaps: ListWatch<V1ConfigMap>;
  tenantSecrets: ListWatch<V1Secret>;
  hostConfigMaps: ListWatch<V1ConfigMap>;
  hostSecrets: ListWatch<V1Secret>;
  tokens: TokenSync;
  trustBundles: TrustBundleSync;
  podCertificates: PodCertificateSync;
  /** Whether a tenant pod runs on the host (bound to a node of the tenant's). */
  placed: (p: V1Pod) => boolean;
}

export class MirrorSync {
  constructor(private readonly d: MirrorSyncDeps) {}

  /** True when a tenant pod that runs on the host uses this ConfigMap or Secret. */
  referenced(kind: 'configMaps' | 'secrets', ns: string, name: string): boolean {
    return this.d.tenantPods.list(ns).some((p) => this.d.placed(p) && podReferences(p)[kind].has(name));
  }

  async syncConfigMap(ns: string, name: string, needed = false): Promise<void> {
    const t = this.d.tenantConfigMaps.get(name, ns);
    const hname = hostName(ns, name);
    const h = this.d.hostConfigMaps.get(hname, this.d.cfg.hostNamespace);
    const hostNs = this.d.cfg.hostNamespace;
    if (!t || (!needed && !h && !this.referenced('configMaps', ns, name))) {
      if (h && !t)
        await this.d.hostCore
          .deleteNamespacedConfigMap({ name: hname, namespace: hostNs })
          .catch(ignoreStatus(404));
      return;
    }
    const want = hostConfigMapFor(this.d.ctx, t);
    if (!h)
      await this.d.hostCore
        .createNamespacedConfigMap({ namespace: hostNs, body: want })
        .catch(ignoreStatus(409));
    else if (!sameData(h, want))
      await this.d.hostCore.replaceNamespacedConfigMap({ name: hname, namespace: hostNs, body: want });
  }

  async syncSecret(ns: string, name: string, needed = false): Promise<void> {
    const t = this.d.tenantSecrets.get(name, ns);
    const hname = hostName(ns, name);
    const h = this.d.hostSecrets.get(hname, this.d.cfg.hostNamespace);
    const hostNs = this.d.cfg.hostNamespace;
    const want = t ? hostSecretFor(this.d.ctx, t) : undefined;
    if (!want || (!needed && !h && !this.referenced('secrets', ns, name))) {
      if (h && !want)
        await this.d.hostCore
          .deleteNamespacedSecret({ name: hname, namespace: hostNs })
          .catch(ignoreStatus(404));
      return;
    }
    if (!h)
      await this.d.hostCore
        .createNamespacedSecret({ namespace: hostNs, body: want })
        .catch(ignoreStatus(409));
    else if (!sameData(h, want))
      await this.d.hostCore.replaceNamespacedSecret({ name: hname, namespace: hostNs, body: want });
  }

  /** Neither side has the pod any more: what belonged to it can go. */
  private podGone([ns, pod]: [string, string]): boolean {
    return (
      !this.d.tenantPods.get(pod, ns) && !this.d.hostPods.get(hostName(ns, pod), this.d.cfg.hostNamespace)
    );
  }

  /** Host copies nothing needs any more: unreferenced ConfigMaps/Secrets, objects of gone pods. */
  async collectGarbage(): Promise<void> {
    const hostNs = this.d.cfg.hostNamespace;
    for (const h of this.d.hostConfigMaps.list()) {
      const bundlesFor = trustBundlesOwner(h);
      if (bundlesFor) {
        if (this.podGone(bundlesFor)) await this.d.trustBundles.remove(...bundlesFor);
        continue;
      }
      const from = origin(h);
      if (from && !this.referenced('configMaps', from.namespace, from.name))
        await this.d.hostCore
          .deleteNamespacedConfigMap({ name: h.metadata!.name!, namespace: hostNs })
          .catch(ignoreStatus(404));
    }
    for (const h of this.d.hostSecrets.list()) {
      const certificatesFor = podCertificatesOwner(h);
      if (certificatesFor) {
        if (this.podGone(certificatesFor)) await this.d.podCertificates.remove(...certificatesFor);
        continue;
      }
      const tokenFor = tokenOwner(h);
      if (tokenFor) {
        const [ns, pod] = tokenFor;
        if (this.podGone(tokenFor)) await this.d.tokens.remove(ns, pod);
        else {
          const tp = this.d.tenantPods.get(pod, ns);
          // Renews them when due.
          if (tp && this.d.placed(tp)) await this.d.tokens.issue(tp, podReferences(tp).tokens);
        }
        continue;
      }
      const from = origin(h);
      if (from && !this.referenced('secrets', from.namespace, from.name))
        await this.d.hostCore
          .deleteNamespacedSecret({ name: h.metadata!.name!, namespace: hostNs })
          .catch(ignoreStatus(404));
    }
  }
}
