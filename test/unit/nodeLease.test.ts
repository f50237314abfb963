/**
 * A tenant node's Lease renewal (clusterTree's heartbeat): the first makes the Lease, the next
 * ones replace the Lease the last write returned, as a kubelet's do; another writer's change in
 * between (a conflict), a deleted Lease or a failed update is mended in the same renewal; a
 * removed node's Lease is forgotten. Against an in-memory Lease store that keeps
 * resourceVersions as an API server does.
 */
import {
  ApiException,
  type CoordinationV1Api,
  type CoreV1Api,
  type V1Lease,
  type V1Node,
} from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { NodeSync } from '../../src/clustertree/nodeSync.js';
import { createLogger } from '../../src/worker/logger.js';
import { listOf, nodeSyncConfig } from '../support/clusterTreeFakes.js';

const quiet = createLogger({ level: 'error' });

const fail = (code: number) => new ApiException(code, `status ${code}`, {}, {});

/** Leases of kube-node-lease as an API server keeps them: every write a new resourceVersion. */
function leaseStore() {
  const leases = new Map<string, V1Lease>();
  let rv = 0;
  const calls: string[] = [];
  /** The next replace fails with this status. */
  const failing: { replace?: number } = {};
  const stored = (l: V1Lease): V1Lease => {
    const copy = structuredClone(l);
    copy.metadata = { ...copy.metadata, resourceVersion: String(++rv) };
    leases.set(copy.metadata.name!, copy);
    return structuredClone(copy);
  };
  const api = {
    createNamespacedLease({ body }: { body: V1Lease }) {
      calls.push('create');
      if (leases.has(body.metadata!.name!)) return Promise.reject(fail(409));
      return Promise.resolve(stored(body));
    },
    replaceNamespacedLease({ name, body }: { name: string; body: V1Lease }) {
      calls.push('replace');
      const code = failing.replace;
      delete failing.replace;
      if (code) return Promise.reject(fail(code));
      const have = leases.get(name);
      if (!have) return Promise.reject(fail(404));
      if (body.metadata?.resourceVersion !== have.metadata!.resourceVersion) return Promise.reject(fail(409));
      return Promise.resolve(stored(body));
    },
    patchNamespacedLease({ name, body }: { name: string; body: { spec: V1Lease['spec'] } }) {
      calls.push('patch');
      const have = leases.get(name);
      if (!have) return Promise.reject(fail(404));
      return Promise.resolve(stored({ ...have, spec: { ...have.spec, ...body.spec } }));
    },
    deleteNamespacedLease({ name }: { name: string }) {
      calls.push('delete');
      if (!leases.delete(name)) return Promise.reject(fail(404));
      return Promise.resolve({});
    },
  };
  return { api: api as unknown as CoordinationV1Api, leases, calls, failing };
}

function nodeSync(
  store: ReturnType<typeof leaseStore>,
  nodes: Map<string, V1Node>,
  timings: { leaseDurationSeconds?: number } = {},
) {
  const cfg = nodeSyncConfig(timings);
  const list = listOf;
  const tenantCore = { deleteNode: () => Promise.resolve({}) } as unknown as CoreV1Api;
  return new NodeSync({
    cfg,
    tenantCore,
    tenantLeases: store.api,
    hostNodes: list(new Map<string, V1Node>()),
    hostQuotas: list(new Map()),
    tenantNodes: list(nodes),
    log: quiet,
  });
}

const renewTime = (store: ReturnType<typeof leaseStore>) =>
  store.leases.get('node-a')!.spec!.renewTime as unknown as string;
const tick = () => new Promise((r) => setTimeout(r, 2));

describe('tenant node Lease renewal', () => {
  const nodes = () =>
    new Map<string, V1Node>([['node-a', { metadata: { name: 'node-a', uid: 'node-uid' } }]]);

  it('makes the Lease, then replaces what the last write returned: no patch while nobody else writes', async () => {
    const store = leaseStore();
    const sync = nodeSync(store, nodes());
    await sync.renewLeases();
    expect(store.calls).toEqual(['patch', 'create']);
    const made = store.leases.get('node-a')!;
    expect(made.metadata?.ownerReferences?.[0]).toMatchObject({
      kind: 'Node',
      name: 'node-a',
      uid: 'node-uid',
    });
    expect(made.spec).toMatchObject({ holderIdentity: 'node-a', leaseDurationSeconds: 40 });

    store.calls.length = 0;
    let last = renewTime(store);
    for (let i = 0; i < 3; i++) {
      await tick();
      await sync.renewLeases();
      // A MicroTime, six digits of fraction, as the API server parses it.
      expect(renewTime(store)).toMatch(/\.\d{6}Z$/);
      expect(renewTime(store) > last).toBe(true);
      last = renewTime(store);
    }
    expect(store.calls).toEqual(['replace', 'replace', 'replace']);
    expect(sync.heartbeats).toBe(4);
  });

  it('states the duration of its configuration at each renewal, when the Lease says another (a configuration changed since)', async () => {
    const store = leaseStore();
    const tenant = nodes();
    await nodeSync(store, tenant).renewLeases();
    expect(store.leases.get('node-a')!.spec!.leaseDurationSeconds).toBe(40);
    // A new configuration (ADR 12, decision 19): its first renewal of the Lease has none kept, so patches.
    const later = nodeSync(store, tenant, { leaseDurationSeconds: 240 });
    await later.renewLeases();
    expect(store.calls.slice(-1)).toEqual(['patch']);
    expect(store.leases.get('node-a')!.spec!.leaseDurationSeconds).toBe(240);
    // And the one after, by an update of what that returned.
    await later.renewLeases();
    expect(store.calls.slice(-1)).toEqual(['replace']);
    expect(store.leases.get('node-a')!.spec!.leaseDurationSeconds).toBe(240);
  });

  it("mends another writer's change and a deleted Lease in the same renewal", async () => {
    const store = leaseStore();
    const sync = nodeSync(store, nodes());
    await sync.renewLeases();

    // Someone else wrote it (a new resourceVersion): the replace conflicts, the patch renews.
    const theirs = store.leases.get('node-a')!;
    store.leases.set('node-a', { ...theirs, metadata: { ...theirs.metadata, resourceVersion: '999' } });
    const before = renewTime(store);
    store.calls.length = 0;
    await tick();
    await sync.renewLeases();
    expect(store.calls).toEqual(['replace', 'patch']);
    expect(renewTime(store) > before).toBe(true);
    store.calls.length = 0;
    await sync.renewLeases();
    expect(store.calls).toEqual(['replace']);

    // Deleted: made again, owned by its node.
    store.leases.delete('node-a');
    store.calls.length = 0;
    await sync.renewLeases();
    expect(store.calls).toEqual(['replace', 'create']);
    expect(store.leases.get('node-a')?.metadata?.ownerReferences?.[0]?.uid).toBe('node-uid');
    store.calls.length = 0;
    await sync.renewLeases();
    expect(store.calls).toEqual(['replace']);
    expect(sync.heartbeatFallbacks).toBe(2);
  });

  it('renews by a patch in the same pass when the update fails otherwise, and counts it', async () => {
    const store = leaseStore();
    const sync = nodeSync(store, nodes());
    await sync.renewLeases();
    const before = renewTime(store);
    store.failing.replace = 500;
    store.calls.length = 0;
    await tick();
    await sync.renewLeases();
    expect(store.calls).toEqual(['replace', 'patch']);
    expect(renewTime(store) > before).toBe(true);
    expect(sync.heartbeatFallbacks).toBe(1);
    store.calls.length = 0;
    await sync.renewLeases();
    expect(store.calls).toEqual(['replace']);
  });

  it('gives a Lease someone else made its Node as owner at the first update', async () => {
    const store = leaseStore();
    const sync = nodeSync(store, nodes());
    await store.api.createNamespacedLease({
      namespace: 'kube-node-lease',
      body: { metadata: { name: 'node-a' }, spec: { holderIdentity: 'node-a' } },
    });
    store.calls.length = 0;
    await sync.renewLeases();
    await sync.renewLeases();
    expect(store.calls).toEqual(['patch', 'replace']);
    expect(store.leases.get('node-a')?.metadata?.ownerReferences).toEqual([
      { apiVersion: 'v1', kind: 'Node', name: 'node-a', uid: 'node-uid' },
    ]);
    expect(sync.heartbeatFallbacks).toBe(0);
  });

  it('makes no Lease again for a node removed while its renewal was in flight', async () => {
    const store = leaseStore();
    const tenant = nodes();
    const sync = nodeSync(store, tenant);
    await sync.renewLeases();
    store.leases.delete('node-a');
    store.calls.length = 0;
    const renewing = sync.renewLeases();
    // Gone from the tenant (and from the host: the fake host has no nodes) before the answer.
    tenant.delete('node-a');
    await renewing;
    expect(store.calls).toEqual(['replace']);
    expect(store.leases.has('node-a')).toBe(false);
  });

  it("forgets a removed node's Lease: a node of that name again starts with a patch", async () => {
    const store = leaseStore();
    const tenant = nodes();
    const sync = nodeSync(store, tenant);
    await sync.renewLeases();
    // The host node is gone (the host's node list is empty): the tenant's node and Lease go.
    await sync.sync('node-a');
    expect(store.leases.has('node-a')).toBe(false);
    // Gone from the tenant's list too, then a node of that name again.
    const node = tenant.get('node-a')!;
    tenant.delete('node-a');
    store.calls.length = 0;
    await sync.renewLeases();
    expect(store.calls).toEqual([]);
    tenant.set('node-a', node);
    await sync.renewLeases();
    expect(store.calls).toEqual(['patch', 'create']);
    expect(sync.heartbeatFallbacks).toBe(0);
  });
});
