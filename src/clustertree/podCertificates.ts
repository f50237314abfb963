/**
 * Pod certificate projections (`projected.sources[].podCertificate`). A kubelet makes a key pair,
 * files a PodCertificateRequest for the pod with the named signer, and mounts the key and the
 * chain the signer issues, renewing from `beginRefreshAt`. A host kubelet would ask the host's
 * signers, so clusterTree does the kubelet's part against the tenant API: it files the request
 * (for the tenant pod, its service account and its tenant node), keeps the key until the
 * request is issued, and writes key, chain and bundle into one host Secret per pod that the host
 * pod projects at the same paths. Until the first certificate is issued the host pod waits for
 * that Secret, as a kubelet holds the pod until its projection can be written.
 *
 * The key of a pending request lives in memory only: after a restart clusterTree files a new
 * request (the abandoned one is deleted with its pod, which owns it). A denied or failed request
 * is final for that pod, as it is for a kubelet; it is logged.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type {
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObject,
  ListWatch,
  V1Condition,
  V1Pod,
  V1PodCertificateProjection,
  V1Secret,
} from '@kubernetes/client-node';
import { webcrypto } from 'node:crypto';
import { ignoreStatus } from '../api/kubeClient.js';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import type { Logger } from '../worker/logger.js';
import { MANAGER, OriginLabel, podCertificateSecretName, tenantHash } from './naming.js';
import { putPodSecret } from './podObjects.js';
import { PodAnnotation } from './translate.js';
import { trustBundleKey } from './trustBundles.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** The tenant resource, through the generic client (client-node 2.0 has only the v1alpha1 model). */
export const POD_CERTIFICATE_REQUESTS = {
  group: 'certificates.k8s.io',
  version: 'v1',
  plural: 'podcertificaterequests',
} as const;

export interface PodCertificateRequestObject extends KubernetesObject {
  spec?: { signerName?: string; podName?: string; podUID?: string };
  status?: {
    conditions?: V1Condition[];
    certificateChain?: string;
    beginRefreshAt?: string | Date;
    notAfter?: string | Date;
  };
}

/** On a pod-certificate Secret: the tenant pod it belongs to, `ns/name`. */
const CERTIFICATES_FOR = 'kosmos.io/pod-certificates-for';
/** On that Secret: when each projection is to be renewed (JSON, key → RFC 3339). */
const REFRESH_AT = 'kosmos.io/pod-certificates-refresh-at';
/** A request nobody answered in this long is filed again (the kubelet waits as long). */
const ABANDON_AFTER_MS = 15 * 60 * 1000;

/** The pod (`[namespace, name]`) a host pod-certificate Secret belongs to, if it is one. */
export function podCertificatesOwner(secret: KubernetesObject): [string, string] | undefined {
  const owner = secret.metadata?.annotations?.[CERTIFICATES_FOR];
  return owner ? (owner.split('/') as [string, string]) : undefined;
}

/** The pod's podCertificate sources, each with the key its files go under in the host Secret. */
export function podCertificateSources(pod: V1Pod): { key: string; source: V1PodCertificateProjection }[] {
  return (pod.spec?.volumes ?? []).flatMap((v) =>
    (v.projected?.sources ?? []).flatMap((p, i) =>
      p.podCertificate ? [{ key: trustBundleKey(v.name, i), source: p.podCertificate }] : [],
    ),
  );
}

/** The host Secret keys of one projection: what each path of the source reads. */
export const podCertificateKeys = (key: string) =>
  ({ bundle: `${key}.bundle`, key: `${key}.key`, chain: `${key}.chain` }) as const;

/** The projection of one podCertificate source, as a projection of the pod's host Secret. */
export function podCertificateProjection(
  namespace: string,
  pod: string,
  key: string,
  source: V1PodCertificateProjection,
): { secret: { name: string; items: { key: string; path: string }[] } } {
  const keys = podCertificateKeys(key);
  const items = [
    ...(source.credentialBundlePath ? [{ key: keys.bundle, path: source.credentialBundlePath }] : []),
    ...(source.keyPath ? [{ key: keys.key, path: source.keyPath }] : []),
    ...(source.certificateChainPath ? [{ key: keys.chain, path: source.certificateChainPath }] : []),
  ];
  return { secret: { name: podCertificateSecretName(namespace, pod), items } };
}

const KEY_TYPES: Record<string, { generate: object; sign: object }> = {
  ECDSAP256: { generate: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  ECDSAP384: { generate: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  ECDSAP521: { generate: { name: 'ECDSA', namedCurve: 'P-521' }, sign: { name: 'ECDSA', hash: 'SHA-512' } },
  ...Object.fromEntries(
    [3072, 4096].map((bits) => [
      `RSA${bits}`,
      {
        generate: {
          name: 'RSASSA-PKCS1-v1_5',
          modulusLength: bits,
          publicExponent: new Uint8Array([1, 0, 1]),
          hash: 'SHA-256',
        },
        sign: { name: 'RSASSA-PKCS1-v1_5' },
      },
    ]),
  ),
  ED25519: { generate: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
};

/**
 * A key pair of the projection's type and the stub PKCS#10 request the API wants as proof of
 * possession: an empty subject, signed with the new key, as the kubelet makes it.
 */
export async function keyAndStubRequest(keyType: string): Promise<{ keyPem: string; stubRequest: Buffer }> {
  const alg = KEY_TYPES[keyType];
  if (!alg) throw new Error(`unknown key type ${keyType}`);
  const keys = (await webcrypto.subtle.generateKey(
    alg.generate as Parameters<typeof webcrypto.subtle.generateKey>[0],
    true,
    ['sign', 'verify'],
  )) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: alg.sign as webcrypto.AlgorithmIdentifier,
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    keyPem: pem(x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')),
    stubRequest: Buffer.from(csr.rawData),
  };
}

/** PEM blocks one after another, each ending in a newline. */
const pem = (text: string): string => `${text.replace(/\r\n/g, '\n').trim()}\n`;

/** The chain's blocks as CERTIFICATE blocks, each re-encoded, as the kubelet mounts them. */
export function cleanChain(chain: string): string {
  return pem(x509.PemConverter.encode(x509.PemConverter.decode(chain), 'CERTIFICATE'));
}

const iso = (v: string | Date | undefined): string | undefined =>
  v === undefined ? undefined : typeof v === 'string' ? v : v.toISOString();

export interface PodCertificateSyncDeps {
  tenant: VirtualClusterRef;
  hostNamespace: string;
  tenantCore: CoreV1Api;
  tenantCustom: CustomObjectsApi;
  hostCore: CoreV1Api;
  hostSecrets: ListWatch<V1Secret>;
  tenantRequests: ListWatch<PodCertificateRequestObject>;
  log: Logger;
}

interface Pending {
  request: string;
  keyPem: string;
  since: number;
}

export class PodCertificateSync {
  /** `<ns>/<pod>/<uid>/<key>` → the request filed for it and its key. */
  private readonly pending = new Map<string, Pending>();
  /** `<ns>/<pod>/<uid>/<key>` of requests denied or failed: final for that pod. */
  private readonly refused = new Set<string>();

  constructor(private readonly d: PodCertificateSyncDeps) {}

  /**
   * Files what the pod's projections need, and writes what was issued into the host Secret.
   * `node` is the tenant node the pod is bound to (its name and uid go in the request).
   */
  async write(pod: V1Pod, node: { name: string; uid: string } | undefined): Promise<void> {
    const sources = podCertificateSources(pod);
    if (sources.length === 0 || !node) return;
    const ns = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const uid = pod.metadata!.uid!;
    const secretName = podCertificateSecretName(ns, name);
    const existing = this.d.hostSecrets.get(secretName, this.d.hostNamespace);
    const current = existing?.metadata?.annotations?.[PodAnnotation.uid] === uid ? existing : undefined;
    const data: Record<string, string> = { ...(current?.data ?? {}) };
    let refreshAt: Record<string, string> = {};
    try {
      refreshAt = JSON.parse(current?.metadata?.annotations?.[REFRESH_AT] ?? '{}') as Record<string, string>;
    } catch {
      refreshAt = {};
    }
    let changed = false;
    const now = Date.now();
    for (const { key, source } of sources) {
      const id = `${ns}/${name}/${uid}/${key}`;
      if (this.refused.has(id)) continue;
      const keys = podCertificateKeys(key);
      if (data[keys.chain] && Date.parse(refreshAt[key] ?? '') > now) continue;
      const p = this.pending.get(id);
      if (p) {
        const request = this.d.tenantRequests.get(p.request, ns);
        const done = (type: string) =>
          request?.status?.conditions?.find((c) => c.type === type && c.status === 'True');
        const issued = done('Issued');
        if (issued && request?.status?.certificateChain) {
          const chain = cleanChain(request.status.certificateChain);
          data[keys.key] = Buffer.from(p.keyPem).toString('base64');
          data[keys.chain] = Buffer.from(chain).toString('base64');
          data[keys.bundle] = Buffer.from(p.keyPem + chain).toString('base64');
          refreshAt[key] = iso(request.status.beginRefreshAt) ?? iso(request.status.notAfter) ?? '';
          this.pending.delete(id);
          changed = true;
          continue;
        }
        const refusal = done('Denied') ?? done('Failed');
        if (refusal) {
          this.pending.delete(id);
          this.refused.add(id);
          this.d.log.warn('pod certificate refused by its signer', {
            pod: `${ns}/${name}`,
            signer: source.signerName,
            reason: refusal.reason,
            message: refusal.message,
          });
          // The pod's event, as its kubelet records one.
          const now = new Date();
          await this.d.tenantCore
            .createNamespacedEvent({
              namespace: ns,
              body: {
                metadata: { generateName: `${name}.`, namespace: ns },
                involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: ns, name, uid },
                type: 'Warning',
                reason: refusal.type,
                message: `PodCertificateRequest ${ns}/${p.request} was ${refusal.type === 'Denied' ? 'denied' : 'failed'}, reason="${refusal.reason}", message="${refusal.message}"`,
                source: { component: 'kubelet', host: node.name },
                firstTimestamp: now,
                lastTimestamp: now,
                count: 1,
              },
            })
            .catch(ignoreStatus(403, 404));
          continue;
        }
        if (request || now - p.since < ABANDON_AFTER_MS) continue; // still waiting
        this.pending.delete(id);
      }
      await this.file(pod, node, key, source, id);
    }
    if (!changed) return;
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: secretName,
        namespace: this.d.hostNamespace,
        labels: { [OriginLabel.managedBy]: MANAGER, [OriginLabel.tenant]: tenantHash(this.d.tenant) },
        annotations: {
          [CERTIFICATES_FOR]: `${ns}/${name}`,
          [PodAnnotation.uid]: uid,
          [REFRESH_AT]: JSON.stringify(refreshAt),
        },
      },
      type: 'Opaque',
      data,
    };
    await putPodSecret(this.d.hostCore, body, existing !== undefined);
  }

  /** Files a PodCertificateRequest for one projection, as the pod's kubelet would. */
  private async file(
    pod: V1Pod,
    node: { name: string; uid: string },
    key: string,
    source: V1PodCertificateProjection,
    id: string,
  ): Promise<void> {
    const ns = pod.metadata!.namespace!;
    const saName = pod.spec!.serviceAccountName ?? 'default';
    const sa = await this.d.tenantCore.readNamespacedServiceAccount({ name: saName, namespace: ns });
    const { keyPem, stubRequest } = await keyAndStubRequest(source.keyType);
    const userAnnotations = (source as { userAnnotations?: Record<string, string> }).userAnnotations;
    const created = (await this.d.tenantCustom.createNamespacedCustomObject({
      ...POD_CERTIFICATE_REQUESTS,
      namespace: ns,
      body: {
        apiVersion: 'certificates.k8s.io/v1',
        kind: 'PodCertificateRequest',
        metadata: {
          generateName: 'req-',
          namespace: ns,
          ownerReferences: [
            { apiVersion: 'v1', kind: 'Pod', name: pod.metadata!.name!, uid: pod.metadata!.uid! },
          ],
        },
        spec: {
          signerName: source.signerName,
          podName: pod.metadata!.name!,
          podUID: pod.metadata!.uid!,
          serviceAccountName: saName,
          serviceAccountUID: sa.metadata!.uid!,
          nodeName: node.name,
          nodeUID: node.uid,
          ...(source.maxExpirationSeconds ? { maxExpirationSeconds: source.maxExpirationSeconds } : {}),
          stubPKCS10Request: stubRequest.toString('base64'),
          ...(userAnnotations ? { unverifiedUserAnnotations: userAnnotations } : {}),
        },
      },
    })) as PodCertificateRequestObject;
    this.pending.set(id, { request: created.metadata!.name!, keyPem, since: Date.now() });
    this.d.log.info('pod certificate requested', { pod: `${ns}/${pod.metadata!.name!}`, projection: key });
  }

  /** Forgets a pod: its host Secret and whatever was pending for it. */
  async remove(ns: string, pod: string): Promise<void> {
    for (const id of [...this.pending.keys(), ...this.refused])
      if (id.startsWith(`${ns}/${pod}/`)) {
        this.pending.delete(id);
        this.refused.delete(id);
      }
    const secretName = podCertificateSecretName(ns, pod);
    if (!this.d.hostSecrets.get(secretName, this.d.hostNamespace)) return;
    await this.d.hostCore
      .deleteNamespacedSecret({ name: secretName, namespace: this.d.hostNamespace })
      .catch(ignoreStatus(404));
  }
}
