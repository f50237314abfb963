/**
 * Certificate renewal and CA rotation on real components: a tenant with minutes-long
 * certificates is renewed while a client keeps calling it, and a CA rotation keeps old and new
 * kubeconfigs working until the old CA is retired.
 */
import { CoreV1Api, KubeConfig, type V1Secret } from '@kubernetes/client-node';
import type { X509Certificate } from 'node:crypto';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import { PKI_CHECKSUM_ANNOTATION, PKI_SECRET } from '../../src/activities/pkiSecret.js';
import { hostNamespace } from '../../src/clustertree/naming.js';
import { fingerprint, readSet, setChecksum } from '../../src/pki/controlPlanePki.js';
import type { VirtualCluster } from '../../src/api/virtualCluster.js';
import { POD_COMPONENTS } from '../../src/runtime/podWorkload.js';
import type { ComponentName } from '../../src/runtime/types.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  eventually,
  host,
  kosmosVc,
  newStateDir,
  processesMentioning,
  runningClusterTree,
  refOf,
  statusAs,
  testOperator,
  waitForGone,
  waitForPhase,
  type Credentials,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
let stateDir: string;

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('certs');
  // A process each for the API server, controller-manager and scheduler: what a renewal restarts
  // there, and what it keeps (one process keeps all: oneProcess.test.ts; ADR 12, decision 21).
  operator = await testOperator({
    stateDir,
    taskQueue: `certs-${randomUUID()}`,
    namespace,
    oneProcess: false,
  });
});
/** Pollers a failed test leaves running: stopped before the operator. */
const pollers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const stop of pollers) await stop();
  await operator?.stop({ stopTenants: true });
});

const read = async (name: string): Promise<VirtualCluster> =>
  (await host().getVirtualCluster({ namespace, name }))!;
const kubeconfigOf = (vc: VirtualCluster) => Buffer.from(vc.spec.kubeconfig ?? '', 'base64').toString();
const pids = (dir: string) => new Map(processesMentioning(dir).map((p) => [p.exe, p.pid]));

/** The certificate the API server serves right now. */
function servedCertificate(server: string): Promise<X509Certificate> {
  const url = new URL(server);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port), rejectUnauthorized: false }, () => {
      const raw = socket.getPeerX509Certificate();
      socket.end();
      if (raw) resolve(raw);
      else reject(new Error('no peer certificate'));
    });
    socket.on('error', reject);
  });
}

/**
 * Calls the tenant API every 100 ms on a new connection (a new TLS handshake each time) with
 * `creds`; a failed call is retried once. Counts the calls and the ones that failed twice.
 */
function keepCalling(creds: Credentials) {
  let stop = false;
  const result = { calls: 0, failedTwice: [] as string[], retried: 0 };
  const once = async () => {
    try {
      return await statusAs(creds.server, creds.caPem, creds);
    } catch (e) {
      return (e as Error).message;
    }
  };
  const done = (async () => {
    while (!stop) {
      result.calls++;
      const first = await once();
      if (first !== 200) {
        result.retried++;
        await new Promise((r) => setTimeout(r, 200));
        const second = await once();
        if (second !== 200) result.failedTwice.push(`${first} then ${second}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    result,
    stop: async () => {
      stop = true;
      await done;
      return result;
    },
  };
}

/**
 * Lists `owner`'s components every 25 ms until stopped; says each time one of `names` was not
 * there (stopped and not yet started again: what a failed attempt would have left behind).
 */
function watchListed(owner: string, names: readonly ComponentName[]) {
  let stop = false;
  const result = { lists: 0, missing: [] as string[] };
  const done = (async () => {
    while (!stop) {
      const listed = new Set((await operator.runtime!.list(owner)).map((c) => c.name));
      result.lists++;
      for (const n of names) if (!listed.has(n)) result.missing.push(`${n} at ${new Date().toISOString()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  const stopIt = async () => {
    stop = true;
    await done;
    return result;
  };
  pollers.push(stopIt);
  return { stop: stopIt };
}

describe('certificates', () => {
  it('renews every leaf before it expires while a client keeps calling, restarting only what needs it', async () => {
    // Leaves last 3 minutes and are renewed 150 s before: the first renewal 30 s after issue,
    // then every 30 s (the workflow spaces renewals at least that far apart).
    const created = await createVirtualCluster(namespace, 'short', {
      certificates: { validity: '3m', renewBefore: '150s' },
    });
    const vc = await waitForPhase(namespace, 'short', 'Ready');
    const dir = join(stateDir, 'tenants', tenantId(refOf(created)));
    const first = vc.status!.certificates!;
    expect(Date.parse(first.notAfter!) - Date.now()).toBeLessThan(3 * 60_000);
    expect(vc.status?.conditions?.find((c) => c.type === 'CertificatesValid')).toMatchObject({
      status: 'True',
      reason: 'Valid',
    });
    const creds = credentialsOf(kubeconfigOf(vc));
    const servedBefore = await servedCertificate(creds.server);
    const before = pids(dir);
    // clusterTree, in the worker's shared process, is restarted there: its registration changes
    // (the digest of its files, ADR 12 decision 13), which the process logs for it.
    const id = tenantId(refOf(created));
    const treeStops = async () =>
      (await operator.runtime!.logTail(id, 'clustertree', 1000))
        .split('\n')
        .filter((l) => l.includes('registration changed; restarting')).length;
    const stopsBefore = await treeStops();
    const client = keepCalling(creds);
    // Restarted in place, never stopped first: at no moment is one of them gone from the runtime.
    // (The six a tenant runs, as processes here as in pods; CoreDNS only beside a real node.)
    const listed = watchListed(
      id,
      POD_COMPONENTS.filter((c) => c !== 'coredns' || inject('nodeAddress')),
    );

    // Two renewals while the client calls: each moves notAfter on.
    const renewed = await eventually(
      'two renewals',
      async () => {
        const now = await read('short');
        const c = now.status?.certificates;
        expect(now.status?.phase).toBe('Ready');
        return c?.notAfter && Date.parse(c.notAfter) > Date.parse(first.notAfter!) + 45_000 ? now : undefined;
      },
      150_000,
    );
    const calls = await client.stop();
    expect(calls.calls).toBeGreaterThan(100);
    expect(calls.failedTwice).toEqual([]);
    const lists = await listed.stop();
    expect(lists.lists).toBeGreaterThan(100);
    expect(lists.missing).toEqual([]);

    // The API server serves its new certificate without a restart; etcd kept running too.
    const after = pids(dir);
    const served = await eventually('the new serving certificate', async () => {
      const c = await servedCertificate(creds.server);
      return c.serialNumber !== servedBefore.serialNumber ? c : undefined;
    });
    expect(Date.parse(served.validTo)).toBeGreaterThan(Date.parse(servedBefore.validTo));
    for (const exe of ['etcd', 'kube-apiserver']) expect(after.get(exe), exe).toBe(before.get(exe));
    // Those whose client certificate sits in a kubeconfig read once were restarted.
    for (const exe of ['kube-controller-manager', 'kube-scheduler'])
      expect(after.get(exe), exe).not.toBe(before.get(exe));
    expect(await treeStops()).toBeGreaterThan(stopsBefore);
    expect(await runningClusterTree(operator, id)).toBeDefined();

    // The renewed kubeconfig is published and works; the controller-manager (restarted with its
    // new certificate) still does its work: a new namespace gets its service account.
    const published = credentialsOf(kubeconfigOf(renewed));
    expect(published.certPem).not.toBe(creds.certPem);
    const secret = await host().getSecret(namespace, 'short-kubeconfig');
    expect(Buffer.from(secret!.data!.kubeconfig!, 'base64').toString()).toBe(kubeconfigOf(renewed));
    expect(await statusAs(published.server, published.caPem, published)).toBe(200);
    const kc = new KubeConfig();
    kc.loadFromString(kubeconfigOf(renewed));
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'after-renewal' } } });
    await eventually('the service account controller', () =>
      core.readNamespacedServiceAccount({ name: 'default', namespace: 'after-renewal' }),
    );
    expect(renewed.status?.conditions?.find((c) => c.type === 'CertificatesValid')?.status).toBe('True');
  });

  it('rotates the CA with kosmos-vc rotate-ca: old and new kubeconfigs both work until the old CA is retired', async () => {
    const created = await createVirtualCluster(namespace, 'rotated', { certificates: { caOverlap: '1m' } });
    const vc = await waitForPhase(namespace, 'rotated', 'Ready');
    const old = credentialsOf(kubeconfigOf(vc));
    const oldCA = vc.status!.certificates!.caFingerprint!;

    // The set is kept in a Secret of the tenant's host namespace (ADR 14); the state directory
    // holds a copy (lifecycle.test.ts wakes a tenant whose copy was lost).
    const ref = refOf(created);
    const dir = join(stateDir, 'tenants', tenantId(ref));
    const stored = async () => (await host().getSecret(hostNamespace(ref), PKI_SECRET))!;
    const caIn = (s: V1Secret) => Buffer.from(s.data!['ca.crt']!, 'base64').toString();
    expect(fingerprint(caIn(await stored()))).toBe(oldCA);
    expect((await stored()).data).toHaveProperty(['etcd__ca.key']);

    const cli = (...args: string[]) => kosmosVc(args);
    const said = await cli('rotate-ca', `${namespace}/rotated`, '--timeout', '120');
    expect(said).toMatch(/CA rotation 1 requested; old and new kubeconfigs both work for 1m/);
    expect(said).toMatch(/done in \d+s: new CA [0-9a-f]{16}/);
    // A second rotation must wait for this one to end.
    await expect(cli('rotate-ca', `${namespace}/rotated`, '--timeout', '0')).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/still in progress/) as unknown,
    });

    const overlapping = await read('rotated');
    const c = overlapping.status!.certificates!;
    expect(c).toMatchObject({ caRotation: 1, previousCAFingerprint: oldCA });
    expect(c.caFingerprint).not.toBe(oldCA);
    expect(overlapping.status?.conditions?.find((x) => x.type === 'CertificatesValid')?.reason).toBe(
      'CARotating',
    );
    const next = credentialsOf(kubeconfigOf(overlapping));
    expect(next.caPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    // The new set went to the Secret, and the copy is that set again.
    const rotatedSet = await stored();
    expect(caIn(rotatedSet)).toBe(next.caPem);
    expect(rotatedSet.metadata?.annotations?.[PKI_CHECKSUM_ANNOTATION]).toBe(
      setChecksum((await readSet(join(dir, 'pki')))!),
    );
    // During the overlap both work: the old kubeconfig (old CA, old client certificate) and the new.
    expect(await statusAs(old.server, old.caPem, old)).toBe(200);
    expect(await statusAs(next.server, next.caPem, next)).toBe(200);

    // After the overlap the old CA is retired: the new kubeconfig keeps working, the old one fails.
    const retired = await eventually(
      'the old CA retired',
      async () => {
        const now = await read('rotated');
        return now.status?.certificates?.caRotation === 1 && !now.status.certificates.previousCAFingerprint
          ? now
          : undefined;
      },
      120_000,
    );
    expect(retired.status?.phase).toBe('Ready');
    await eventually('the new kubeconfig after retirement', async () =>
      (await statusAs(next.server, next.caPem, next)) === 200 ? true : undefined,
    );
    const final = credentialsOf(kubeconfigOf(retired));
    expect(final.caPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    expect(await statusAs(final.server, final.caPem, final)).toBe(200);
    await eventually('the old kubeconfig refused', async () => {
      const code = await statusAs(old.server, old.caPem, old).catch((e: Error) => e.message);
      return code !== 200 ? code : undefined;
    });

    for (const name of ['short', 'rotated'])
      await deleteVirtualCluster(namespace, name).catch(() => undefined);
    for (const name of ['short', 'rotated']) await waitForGone(namespace, name);
    expect(await host().getSecret(hostNamespace(ref), PKI_SECRET)).toBeUndefined();
  });
});
