/**
 * Pod certificate projections: clusterTree files the PodCertificateRequest a kubelet would, for
 * the tenant pod on its tenant node, and the host pod mounts key, chain and bundle from a host
 * Secret written once the tenant's signer issued; renewal from beginRefreshAt; a refusal is final.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { CoreV1Api, CustomObjectsApi, ListWatch, V1Pod, V1Secret } from '@kubernetes/client-node';
import { webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { podCertificateSecretName } from '../../src/clustertree/naming.js';
import {
  PodCertificateSync,
  cleanChain,
  keyAndStubRequest,
  type PodCertificateRequestObject,
} from '../../src/clustertree/podCertificates.js';
import { hostPodFor, type TenantContext } from '../../src/clustertree/translate.js';
import type { Logger } from '../../src/worker/logger.js';

const ctx: TenantContext = {
  tenant: { namespace: 'team', name: 'vc1', uid: '11111111-2222-3333-4444-555555555555' },
  hostNamespace: 'kvc-team-vc1-0123456789',
};

const pod: V1Pod = {
  metadata: { name: 'client', namespace: 'shop', uid: 'pod-uid' },
  spec: {
    nodeName: 'node-a',
    serviceAccountName: 'app',
    containers: [{ name: 'c', image: 'i' }],
    volumes: [
      {
        name: 'tls',
        projected: {
          sources: [
            { configMap: { name: 'other' } },
            {
              podCertificate: {
                signerName: 'example.com/spiffe',
                keyType: 'ECDSAP256',
                credentialBundlePath: 'bundle.pem',
                keyPath: 'key.pem',
                certificateChainPath: 'chain.pem',
                maxExpirationSeconds: 3600,
              },
            },
          ],
        },
      },
    ],
  },
};

async function selfSigned(): Promise<string> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=leaf',
    keys,
    signingAlgorithm: alg,
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 3600_000),
  });
  return cert.toString('pem');
}

/** A clusterTree side with fake API clients: what it files and writes is recorded. */
function fixture() {
  const requests = new Map<string, PodCertificateRequestObject>();
  const secrets = new Map<string, V1Secret>();
  const filed: PodCertificateRequestObject[] = [];
  const logged: string[] = [];
  const events: { reason?: string; type?: string; message?: string; involvedObject: { uid?: string } }[] = [];
  const sync = new PodCertificateSync({
    tenant: ctx.tenant,
    hostNamespace: ctx.hostNamespace,
    tenantCore: {
      readNamespacedServiceAccount: ({ name }: { name: string }) =>
        Promise.resolve({ metadata: { name, uid: 'sa-uid' } }),
      createNamespacedEvent: ({ body }: { body: (typeof events)[number] }) => {
        events.push(body);
        return Promise.resolve(body);
      },
    } as unknown as CoreV1Api,
    tenantCustom: {
      createNamespacedCustomObject: ({ body }: { body: PodCertificateRequestObject }) => {
        const made = { ...body, metadata: { ...body.metadata, name: `req-${filed.length}` } };
        filed.push(made);
        return Promise.resolve(made);
      },
    } as unknown as CustomObjectsApi,
    hostCore: {
      createNamespacedSecret: ({ body }: { body: V1Secret }) => {
        secrets.set(body.metadata!.name!, body);
        return Promise.resolve(body);
      },
      replaceNamespacedSecret: ({ body }: { body: V1Secret }) => {
        secrets.set(body.metadata!.name!, body);
        return Promise.resolve(body);
      },
    } as unknown as CoreV1Api,
    hostSecrets: { get: (name: string) => secrets.get(name) } as unknown as ListWatch<V1Secret>,
    tenantRequests: {
      get: (name: string) => requests.get(name),
    } as unknown as ListWatch<PodCertificateRequestObject>,
    log: { warn: (msg: string) => logged.push(msg), info: () => undefined } as unknown as Logger,
  });
  return { sync, requests, secrets, filed, logged, events };
}

const issued = (chain: string, beginRefreshAt: string) => ({
  conditions: [
    { type: 'Issued', status: 'True', reason: 'Issued', message: '', lastTransitionTime: new Date() },
  ],
  certificateChain: chain,
  beginRefreshAt,
  notAfter: new Date(Date.now() + 3600_000).toISOString(),
});

describe('pod certificate projections', () => {
  it('are projected from the pod’s host Secret at the same paths', () => {
    const host = hostPodFor(ctx, pod, 'node-a');
    const source = host.spec!.volumes![0]!.projected!.sources![1]!;
    expect(source).toEqual({
      secret: {
        name: podCertificateSecretName('shop', 'client'),
        items: [
          { key: 'tls.1.bundle', path: 'bundle.pem' },
          { key: 'tls.1.key', path: 'key.pem' },
          { key: 'tls.1.chain', path: 'chain.pem' },
        ],
      },
    });
  });

  it('make keys of every type with a stub request signed by that key, as the API checks', async () => {
    for (const type of ['ECDSAP256', 'ECDSAP384', 'ED25519']) {
      const { keyPem, stubRequest } = await keyAndStubRequest(type);
      expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
      const csr = new x509.Pkcs10CertificateRequest(stubRequest);
      expect(await csr.verify(), type).toBe(true);
      expect(csr.subject).toBe('');
    }
    await expect(keyAndStubRequest('DSA1024')).rejects.toThrow(/unknown key type/);
  });

  it('file a request as the kubelet would, mount what was issued, renew when due, and stop at a refusal', async () => {
    const f = fixture();
    const node = { name: 'node-a', uid: 'node-uid' };
    await f.sync.write(pod, node);
    expect(f.filed).toHaveLength(1);
    expect(f.filed[0]).toMatchObject({
      metadata: { namespace: 'shop', ownerReferences: [{ kind: 'Pod', name: 'client', uid: 'pod-uid' }] },
      spec: {
        signerName: 'example.com/spiffe',
        podName: 'client',
        podUID: 'pod-uid',
        serviceAccountName: 'app',
        serviceAccountUID: 'sa-uid',
        nodeName: 'node-a',
        nodeUID: 'node-uid',
        maxExpirationSeconds: 3600,
      },
    });
    // Waiting: nothing filed twice, nothing written.
    await f.sync.write(pod, node);
    expect(f.filed).toHaveLength(1);
    expect(f.secrets.size).toBe(0);

    const leaf = await selfSigned();
    const later = new Date(Date.now() + 1800_000).toISOString();
    f.requests.set('req-0', { ...f.filed[0]!, status: issued(leaf.replace(/\n/g, '\r\n'), later) });
    await f.sync.write(pod, node);
    const secret = f.secrets.get(podCertificateSecretName('shop', 'client'))!;
    const read = (k: string) => Buffer.from(secret.data![k]!, 'base64').toString();
    expect(read('tls.1.key')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(read('tls.1.chain')).toBe(cleanChain(leaf));
    expect(read('tls.1.bundle')).toBe(read('tls.1.key') + read('tls.1.chain'));
    expect(secret.metadata!.annotations!['kosmos.io/uid']).toBe('pod-uid');
    // Not due: nothing more.
    await f.sync.write(pod, node);
    expect(f.filed).toHaveLength(1);

    // Due: a new request, the old files stay until it is issued; a refusal is final.
    secret.metadata!.annotations!['kosmos.io/pod-certificates-refresh-at'] = JSON.stringify({
      'tls.1': new Date(Date.now() - 1000).toISOString(),
    });
    await f.sync.write(pod, node);
    expect(f.filed).toHaveLength(2);
    f.requests.set('req-1', {
      ...f.filed[1]!,
      status: {
        conditions: [
          {
            type: 'Denied',
            status: 'True',
            reason: 'NoPolicy',
            message: 'no',
            lastTransitionTime: new Date(),
          },
        ],
      },
    });
    await f.sync.write(pod, node);
    await f.sync.write(pod, node);
    expect(f.filed).toHaveLength(2);
    expect(read('tls.1.chain')).toBe(cleanChain(leaf));
    expect(f.logged).toEqual(['pod certificate refused by its signer']);
    expect(f.events).toEqual([
      expect.objectContaining({
        type: 'Warning',
        reason: 'Denied',
        involvedObject: expect.objectContaining({ uid: 'pod-uid' }) as unknown,
        message: expect.stringContaining('reason="NoPolicy"') as unknown,
      }),
    ]);
  });

  it('wait for the pod to be bound to a known tenant node', async () => {
    const f = fixture();
    await f.sync.write(pod, undefined);
    expect(f.filed).toHaveLength(0);
  });
});
