/**
 * The certificate set's Secret (src/activities/pkiSecret.ts) against an in-memory stand-in of
 * the host API's Secrets and namespaces, which answers as the API server does: 404, 409 on a
 * stale resourceVersion or an existing name.
 */
import { ApiException, type V1Namespace, type V1Secret } from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { HostCluster } from '../../src/activities/hostCluster.js';
import {
  PKI_CHECKSUM_ANNOTATION,
  PKI_SECRET,
  PkiConflictError,
  createPkiSecret,
} from '../../src/activities/pkiSecret.js';
import type { VirtualClusterRef } from '../../src/api/virtualCluster.js';
import { hostNamespace } from '../../src/clustertree/naming.js';
import { readSet, setChecksum, writeControlPlanePki } from '../../src/pki/controlPlanePki.js';

const ref: VirtualClusterRef = { namespace: 'team', name: 'vc', uid: '0123abcd-0000-0000-0000-000000000000' };
const ns = hostNamespace(ref);
const req = { clusterName: 'vc', serviceCIDR: '10.96.0.0/12', advertiseAddress: '127.0.0.1' };

const apiError = (code: number) => new ApiException(code, `status ${code}`, {}, {});

/** Namespaces and Secrets as the API server keeps them, resourceVersions included. */
function fakeHost() {
  const namespaces = new Map<string, V1Namespace>();
  const secrets = new Map<string, V1Secret>();
  let version = 0;
  const ensured: string[] = [];
  const refused: string[] = [];
  let refuseNamespace = false;
  const core = {
    readNamespace: ({ name }: { name: string }) => {
      const n = namespaces.get(name);
      return n ? Promise.resolve(n) : Promise.reject(apiError(404));
    },
    readNamespacedSecret: ({ name, namespace }: { name: string; namespace: string }) => {
      const s = secrets.get(`${namespace}/${name}`);
      return s ? Promise.resolve(structuredClone(s)) : Promise.reject(apiError(404));
    },
    createNamespacedSecret: ({ namespace, body }: { namespace: string; body: V1Secret }) => {
      if (!namespaces.has(namespace)) {
        refused.push(namespace);
        return Promise.reject(apiError(404));
      }
      // NamespaceLifecycle admission: nothing new in a namespace being deleted.
      if (namespaces.get(namespace)!.metadata?.deletionTimestamp) return Promise.reject(apiError(403));
      const key = `${namespace}/${body.metadata!.name!}`;
      if (secrets.has(key)) return Promise.reject(apiError(409));
      const stored = { ...body, metadata: { ...body.metadata, resourceVersion: String(++version) } };
      secrets.set(key, stored);
      return Promise.resolve(stored);
    },
    replaceNamespacedSecret: ({
      name,
      namespace,
      body,
    }: {
      name: string;
      namespace: string;
      body: V1Secret;
    }) => {
      const key = `${namespace}/${name}`;
      const current = secrets.get(key);
      if (!current) return Promise.reject(apiError(404));
      if (current.metadata?.resourceVersion !== body.metadata?.resourceVersion)
        return Promise.reject(apiError(409));
      const stored = { ...body, metadata: { ...body.metadata, resourceVersion: String(++version) } };
      secrets.set(key, stored);
      return Promise.resolve(stored);
    },
  };
  return {
    namespaces,
    secrets,
    ensured,
    refused,
    refuseNamespaces: () => void (refuseNamespace = true),
    pki: createPkiSecret({
      host: { core } as unknown as HostCluster,
      // The namespace is there a turn later, as an API server's answer is.
      ensureNamespace: async (r) => {
        ensured.push(hostNamespace(r));
        await new Promise((resolve) => setTimeout(resolve, 0));
        if (refuseNamespace) throw new Error('gone');
        namespaces.set(hostNamespace(r), { metadata: { name: hostNamespace(r) } });
      },
    }),
  };
}

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'kvc-pki-secret-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('the certificate set kept in a Secret', () => {
  it('stores a new set before the copy, and gives an empty directory the same set', async () => {
    const host = fakeHost();
    const first = join(root, 'a', 'pki');
    const seen = await host.pki.sync(ref, first);
    expect(seen).toEqual({ resourceVersion: undefined, rewritten: false, namespaceMissing: true });
    // The namespace is made for the store (no tenant network made it first), from the commit's
    // making on: before the set is written, and no store is tried before it.
    const commit = host.pki.commit(ref, seen);
    expect(host.ensured).toEqual([ns]);
    await writeControlPlanePki(first, req, { commit });
    expect(host.ensured).toEqual([ns]);
    expect(host.refused).toEqual([]);
    const stored = host.secrets.get(`${ns}/${PKI_SECRET}`)!;
    const set = (await readSet(first))!;
    expect(stored.metadata?.annotations?.[PKI_CHECKSUM_ANNOTATION]).toBe(setChecksum(set));
    expect(Object.keys(stored.data!)).toContain('etcd__ca.key');
    expect(stored.metadata?.labels).not.toHaveProperty(['kosmos.io/tenant']);

    // Another worker's empty state directory: the same set, so a re-issue there changes nothing.
    const second = join(root, 'b', 'pki');
    expect((await host.pki.sync(ref, second)).rewritten).toBe(true);
    expect(setChecksum((await readSet(second))!)).toBe(setChecksum(set));
    expect((await writeControlPlanePki(second, req)).reissued).toBe(false);
    expect((await host.pki.sync(ref, second)).rewritten).toBe(false);
    expect(await host.pki.stored(ref)).toEqual(set);
  });

  it('fails the store, never the process, when the namespace cannot be made', async () => {
    const host = fakeHost();
    host.refuseNamespaces();
    const dir = join(root, 'a', 'pki');
    const commit = host.pki.commit(ref, await host.pki.sync(ref, dir));
    await expect(writeControlPlanePki(dir, req, { commit })).rejects.toThrow('gone');
    expect(host.refused).toEqual([]);
    expect(host.secrets.size).toBe(0);
    // A commit never called (the set failed first) leaves its rejection handled: the test runner
    // fails a test on an unhandled one.
    host.pki.commit(ref, await host.pki.sync(ref, join(root, 'b', 'pki')));
    await new Promise((resolve) => setTimeout(resolve, 10));
  });

  it("lets one of two writers win: the other gets a conflict, and its retry takes the winner's set", async () => {
    const host = fakeHost();
    const a = join(root, 'a', 'pki');
    const b = join(root, 'b', 'pki');
    await writeControlPlanePki(a, req, { commit: host.pki.commit(ref, await host.pki.sync(ref, a)) });
    const seenA = await host.pki.sync(ref, a);
    const seenB = await host.pki.sync(ref, b);
    await writeControlPlanePki(a, req, { renew: true, commit: host.pki.commit(ref, seenA) });
    await expect(
      writeControlPlanePki(b, req, { renew: true, commit: host.pki.commit(ref, seenB) }),
    ).rejects.toBeInstanceOf(PkiConflictError);
    // The loser's copy was not swapped: the retry syncs to the winner's.
    expect((await host.pki.sync(ref, b)).rewritten).toBe(true);
    expect(setChecksum((await readSet(b))!)).toBe(setChecksum((await readSet(a))!));
  });

  it("stores a set from before Secrets on the tenant's next step", async () => {
    const host = fakeHost();
    const dir = join(root, 'pki');
    await writeControlPlanePki(dir, req);
    host.namespaces.set(ns, { metadata: { name: ns } });
    expect((await host.pki.sync(ref, dir)).rewritten).toBe(false);
    expect(setChecksum((await host.pki.stored(ref))!)).toBe(setChecksum((await readSet(dir))!));
  });

  it('writes no file a Secret names outside a certificate set, and ignores a namespace on its way out', async () => {
    const host = fakeHost();
    const dir = join(root, 'tenant', 'pki');
    await writeControlPlanePki(dir, req, { commit: host.pki.commit(ref, await host.pki.sync(ref, dir)) });
    const secret = host.secrets.get(`${ns}/${PKI_SECRET}`)!;
    const before = setChecksum((await readSet(dir))!);

    // A writer of Secrets in the host namespace (clusterTree's Role allows it) adds a path.
    secret.data!['a__..__..__..__escaped'] = Buffer.from('x').toString('base64');
    await expect(host.pki.sync(ref, join(root, 'other', 'pki'))).rejects.toThrow(
      /no file of a certificate set/,
    );
    expect(existsSync(join(root, 'escaped'))).toBe(false);
    delete secret.data!['a__..__..__..__escaped'];

    // A tenant's namespace being deleted (a retry after release): its Secret is none, and the
    // copy is not stored there (the API refuses anything new in it), not until it is gone.
    secret.data!['ca.key'] = Buffer.from('an earlier set').toString('base64');
    host.namespaces.set(ns, { metadata: { name: ns, deletionTimestamp: new Date() } });
    expect(await host.pki.sync(ref, dir)).toEqual({ resourceVersion: undefined, rewritten: false });
    expect(setChecksum((await readSet(dir))!)).toBe(before);
    expect(await host.pki.stored(ref)).toBeUndefined();
    host.namespaces.delete(ns);
    host.secrets.clear();
    expect((await host.pki.sync(ref, dir)).rewritten).toBe(false);
    expect(setChecksum((await host.pki.stored(ref))!)).toBe(before);
  });

  it('keeps a name a later version may add to a set, and refuses any other key', async () => {
    const host = fakeHost();
    const dir = join(root, 'pki');
    await writeControlPlanePki(dir, req, { commit: host.pki.commit(ref, await host.pki.sync(ref, dir)) });
    const secret = host.secrets.get(`${ns}/${PKI_SECRET}`)!;
    secret.data!['etcd__healthcheck-client.crt'] = Buffer.from('later').toString('base64');
    expect((await host.pki.sync(ref, join(root, 'newer', 'pki'))).rewritten).toBe(true);
    expect((await readSet(join(root, 'newer', 'pki')))!.get('etcd/healthcheck-client.crt')).toBe('later');
    for (const key of ['..__x.crt', 'etcd__..__x.key', 'a__b__c.crt', 'notes.txt', 'ca-generation__x.crt']) {
      const bad = { ...secret.data!, [key]: 'eA==' };
      host.secrets.set(`${ns}/${PKI_SECRET}`, { ...secret, data: bad });
      await expect(host.pki.sync(ref, join(root, 'bad', 'pki')), key).rejects.toThrow(
        /no file of a certificate set/,
      );
    }
  });
});
