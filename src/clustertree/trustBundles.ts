/**
 * ClusterTrustBundle projections (certificates.k8s.io/v1) of tenant pods. A host kubelet would
 * read the host's trust bundles, so clusterTree writes what the tenant's bundles hold into one host
 * ConfigMap per pod and projects that instead: one key per projected source, the PEM the tenant's
 * kubelet would have written (a bundle by name, or every bundle of a signer whose labels match
 * the selector, certificates de-duplicated). A source that matches nothing is an empty file when
 * it is optional and has no key otherwise, so the ConfigMap projection behaves as the kubelet
 * does: the volume of a required source that matches nothing cannot be set up.
 */
import type {
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObject,
  ListWatch,
  V1ConfigMap,
  V1LabelSelector,
  V1Pod,
  V1VolumeProjection,
} from '@kubernetes/client-node';
import { ignoreStatus } from '../api/kubeClient.js';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import { putPodConfigMap } from './podObjects.js';
import { MANAGER, OriginLabel, tenantHash, trustBundleConfigMapName } from './naming.js';

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

/** On the host ConfigMap of a pod's projected trust bundles: the tenant pod, `ns/name`. */
export const TRUST_BUNDLES_FOR = 'kosmos.io/trust-bundles-for';

/** The tenant resource, read through the generic client (client-node has no v1 model yet). */
export const CLUSTER_TRUST_BUNDLES = {
  group: 'certificates.k8s.io',
  version: 'v1',
  plural: 'clustertrustbundles',
} as const;

/** A tenant certificates.k8s.io/v1 ClusterTrustBundle, as read through the generic client. */
export interface TrustBundleObject extends KubernetesObject {
  spec?: { signerName?: string; trustBundle?: string };
}

const asBundles = (objects: readonly TrustBundleObject[]): TrustBundle[] =>
  objects.map((b) => ({
    name: b.metadata!.name!,
    signerName: b.spec?.signerName,
    labels: b.metadata?.labels ?? {},
    pem: b.spec?.trustBundle ?? '',
  }));

const sameData = (a: Record<string, string> | undefined, b: Record<string, string>): boolean =>
  JSON.stringify(a ?? {}) === JSON.stringify(b);

export interface TrustBundleSyncDeps {
  tenant: VirtualClusterRef;
  hostNamespace: string;
  tenantCustom: CustomObjectsApi;
  hostCore: CoreV1Api;
  /** The tenant's bundles: says when to look again, and whether anything changed. */
  tenantBundles: ListWatch<TrustBundleObject>;
  hostConfigMaps: ListWatch<V1ConfigMap>;
}

/** Keeps each pod's trust-bundle ConfigMap on the host. */
export class TrustBundleSync {
  constructor(private readonly d: TrustBundleSyncDeps) {}

  /** The pod's projected ClusterTrustBundles, in the host ConfigMap its host pod mounts. */
  async write(pod: V1Pod): Promise<void> {
    if (trustBundleSources(pod).length === 0) return;
    const ns = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const cmName = trustBundleConfigMapName(ns, name);
    const existing = this.d.hostConfigMaps.get(cmName, this.d.hostNamespace);
    // Nothing changed as far as the cache knows: no API call (the common case, every resync).
    if (existing && sameData(existing.data, trustBundleData(pod, asBundles(this.d.tenantBundles.list()))))
      return;
    // What is written is read from the API, not the cache: a bundle made just before the pod may
    // not be in the cache yet, the host kubelet mounts what the ConfigMap holds, and an older
    // cache must never write over newer data.
    const live = (
      (await this.d.tenantCustom.listClusterCustomObject(CLUSTER_TRUST_BUNDLES)) as {
        items?: TrustBundleObject[];
      }
    ).items;
    const data = trustBundleData(pod, asBundles(live ?? []));
    if (existing && sameData(existing.data, data)) return;
    const body: V1ConfigMap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: cmName,
        namespace: this.d.hostNamespace,
        labels: { [OriginLabel.managedBy]: MANAGER, [OriginLabel.tenant]: tenantHash(this.d.tenant) },
        annotations: { [TRUST_BUNDLES_FOR]: `${ns}/${name}` },
      },
      data,
    };
    await putPodConfigMap(this.d.hostCore, body, existing !== undefined);
  }

  async remove(ns: string, pod: string): Promise<void> {
    const cmName = trustBundleConfigMapName(ns, pod);
    if (!this.d.hostConfigMaps.get(cmName, this.d.hostNamespace)) return;
    await this.d.hostCore
      .deleteNamespacedConfigMap({ name: cmName, namespace: this.d.hostNamespace })
      .catch(ignoreStatus(404));
  }
}

/** The tenant pod (`[namespace, name]`) a host trust-bundle ConfigMap belongs to, if it is one. */
export function trustBundlesOwner(cm: KubernetesObject): [string, string] | undefined {
  const owner = cm.metadata?.annotations?.[TRUST_BUNDLES_FOR];
  return owner ? (owner.split('/') as [string, string]) : undefined;
}
