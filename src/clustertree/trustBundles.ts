/**
 * ClusterTrustBundle projections (certificates.k8s.io/v1) of tenant pods. A host kubelet would
 * read the host's trust bundles, so clusterTree writes what the tenant's bundles hold into one host
 * ConfigMap per pod and projects that instead: one key per projected source, the PEM the tenant's
 * kubelet would have written (a bundle by name, or every bundle of a signer whose labels match
 * the selector, certificates de-duplicated). A source that matches nothing is an empty file when
 * it is optional and has no key otherwise, so the ConfigMap projection behaves as the kubelet
 * does: the volume of a required source that matches nothing cannot be set up.
 */
import type { V1LabelSelector, V1Pod, V1VolumeProjection } from '@kubernetes/client-node';

/** The parts of a tenant ClusterTrustBundle a projection reads. */
export interface TrustBundle {
  name: string;
  signerName?: string | undefined;
  labels: Record<string, string>;
  pem: string;
}

/** The ConfigMap key of source `index` of projected volume `volume`. */
export const trustBundleKey = (volume: string, index: number): string => `${volume}.${index}`;

/** The pod's ClusterTrustBundle sources, with the key each one's PEM goes under. */
export function trustBundleSources(
  pod: V1Pod,
): { key: string; source: NonNullable<V1VolumeProjection['clusterTrustBundle']> }[] {
  return (pod.spec?.volumes ?? []).flatMap((v) =>
    (v.projected?.sources ?? []).flatMap((p, i) =>
      p.clusterTrustBundle ? [{ key: trustBundleKey(v.name, i), source: p.clusterTrustBundle }] : [],
    ),
  );
}

/**
 * Whether `labels` match a label selector (matchLabels and matchExpressions, as the API defines
 * them). No maintained package does this for client-node's types; it is the API's own rule set.
 */
export function selectorMatches(selector: V1LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (!has || !values.includes(labels[e.key]!)) return false;
        break;
      case 'NotIn':
        if (has && values.includes(labels[e.key]!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/** The certificates of PEM texts, each once, in the order first seen. */
function uniqueCertificates(pems: string[]): string {
  const blocks = pems.flatMap((p) => p.match(/-----BEGIN [^-]+-----[\s\S]*?-----END [^-]+-----/g) ?? []);
  return [...new Set(blocks.map((b) => b.trim()))].map((b) => `${b}\n`).join('');
}

/** The ConfigMap data for a pod: key -> PEM, for every source that matches something. */
export function trustBundleData(pod: V1Pod, bundles: readonly TrustBundle[]): Record<string, string> {
  const data: Record<string, string> = {};
  for (const { key, source } of trustBundleSources(pod)) {
    let matched: TrustBundle[];
    if (source.name) matched = bundles.filter((b) => b.name === source.name);
    // An unset selector matches nothing; an empty one matches every bundle of the signer.
    else if (source.signerName && source.labelSelector)
      matched = bundles.filter(
        (b) => b.signerName === source.signerName && selectorMatches(source.labelSelector!, b.labels),
      );
    else matched = [];
    const pem = uniqueCertificates(matched.map((b) => b.pem));
    // Nothing matched: an optional source is an empty file (as the kubelet writes it), a required
    // one has no key, so the volume cannot be set up and the container does not start.
    if (pem || source.optional) data[key] = pem;
  }
  return data;
}
