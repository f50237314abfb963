import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiMessage, closeConnections, errorText, reuseConnections } from '../../src/api/kubeClient.js';
import { HostCluster } from '../../src/activities/hostCluster.js';
import { createCA, issueCertificate } from '../../src/pki/certificates.js';

// A TLS server that answers every request with an empty NamespaceList and counts the TLS
// connections it accepted.
let server: Server;
let connections = 0;
const patches: string[] = [];
let kubeconfig: (user: string) => KubeConfig;

beforeAll(async () => {
  const ca = await createCA('test-ca');
  const serving = await issueCertificate(ca, {
    commonName: 'localhost',
    ipAddresses: ['127.0.0.1'],
    usage: 'server',
  });
  const client = await issueCertificate(ca, { commonName: 'tester', usage: 'client' });
  server = createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    // A PATCH is never answered (an API server that hangs); its content type is kept.
    if (req.method === 'PATCH') return void patches.push(req.headers['content-type'] ?? '');
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ apiVersion: 'v1', kind: 'NamespaceList', metadata: {}, items: [] }));
  });
  server.on('secureConnection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  kubeconfig = (user) => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [
        {
          name: 'c',
          server: `https://127.0.0.1:${port}`,
          caData: Buffer.from(ca.certPem).toString('base64'),
        },
      ],
      users: [
        {
          name: user,
          certData: Buffer.from(client.certPem).toString('base64'),
          keyData: Buffer.from(client.keyPem).toString('base64'),
        },
      ],
      contexts: [{ name: 'x', cluster: 'c', user }],
      currentContext: 'x',
    });
    return kc;
  };
});

afterAll(() => {
  server.closeAllConnections();
  server.close();
});

/** TLS connections the server accepted for `calls` sequential list calls through `kc`. */
async function connectionsFor(kc: KubeConfig, calls: number): Promise<number> {
  const before = connections;
  const api = kc.makeApiClient(CoreV1Api);
  for (let i = 0; i < calls; i++) expect((await api.listNamespace()).items).toEqual([]);
  return connections - before;
}

describe('reuseConnections', () => {
  // undici may open a second connection while the first one's response is being finished, and
  // then uses both: a pool, not one connection per call.
  it('makes one KubeConfig reuse its TLS connections', async () => {
    expect(await connectionsFor(reuseConnections(kubeconfig('a')), 10)).toBeLessThanOrEqual(2);
  });

  it('is still needed: without it client-node opens a connection per call', async () => {
    // When this fails, client-node reuses connections by itself and reuseConnections can go.
    expect(await connectionsFor(kubeconfig('b'), 10)).toBe(10);
  });

  it('is idempotent, and the pool outlives one API client', async () => {
    const kc = reuseConnections(reuseConnections(kubeconfig('c')));
    expect(await connectionsFor(kc, 10)).toBeLessThanOrEqual(2);
    expect(await connectionsFor(kc, 10)).toBe(0);
  });
  it('closeConnections ends a request still running at once, and the client calls no more', async () => {
    const kc = reuseConnections(kubeconfig('d'));
    const api = kc.makeApiClient(CoreV1Api);
    expect((await api.listNamespace()).items).toEqual([]);
    // The server never answers a PATCH: a request that would hang.
    const hanging = api.patchNamespace({ name: 'x', body: {} }).then(
      () => 'answered',
      (e: unknown) => `failed: ${String(e)}`,
    );
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    await closeConnections(kc);
    expect(await hanging).toMatch(/^failed/);
    expect(performance.now() - t0).toBeLessThan(2000);
    await expect(api.listNamespace()).rejects.toThrow(/closed/);
    patches.length = 0; // (what the later test of PATCHes counts)
  });
});

describe('apiMessage', () => {
  it("says why a call could not reach the server (undici keeps it in the error's cause)", async () => {
    const kc = kubeconfig('d');
    // A port nothing listens on: the server of this test, closed.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    kc.clusters[0] = { ...kc.clusters[0]!, server: `https://127.0.0.1:${port}` };
    const err = await kc
      .makeApiClient(CoreV1Api)
      .listNamespace()
      .catch((e: unknown) => e);
    expect(apiMessage(err)).toMatch(/^fetch failed: connect ECONNREFUSED 127\.0\.0\.1:[0-9]+$/);
  });

  it('takes the reason from a cause without a message of its own (connect to several addresses)', () => {
    const aggregate = Object.assign(new AggregateError([new Error('connect ECONNREFUSED ::1:9')], ''), {
      code: 'ECONNREFUSED',
    });
    expect(errorText(new TypeError('fetch failed', { cause: aggregate }))).toBe('fetch failed: ECONNREFUSED');
    expect(errorText(new TypeError('fetch failed', { cause: 'socket closed' }))).toBe(
      'fetch failed: socket closed',
    );
    expect(errorText(new Error('plain'))).toBe('plain');
  });
});

describe('a status write that must not land late', () => {
  it('is aborted by its signal, the merge-patch content type kept', async () => {
    const host = new HostCluster(kubeconfig('status-writer'));
    const ref = { namespace: 'ns', name: 'vc', uid: 'u' };
    const started = Date.now();
    await expect(host.patchStatus(ref, { phase: 'Sleeping' }, AbortSignal.timeout(300))).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(patches).toEqual(['application/merge-patch+json']);
  });
});
