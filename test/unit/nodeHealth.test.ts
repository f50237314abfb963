/**
 * A promoted node's health in the tenant is its host node's (ADR 12, decision 19): the tenant's
 * controller-manager runs no node-lifecycle controller, so clusterTree shows the host node's
 * conditions and its health taints (node.kubernetes.io/...), which the tenant's scheduler and
 * taint-eviction controller act on. The tenant's own taints and labels others add are kept, and
 * are no reason to write the node again.
 */
import type { CoordinationV1Api, CoreV1Api, V1Node, V1Taint } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { ClusterTreeConfig } from '../../src/clustertree/config.js';
import { NodeSync } from '../../src/clustertree/nodeSync.js';
import { tenantNodeFor, virtualNode, withHealthTaints } from '../../src/clustertree/tenantNodes.js';
import { createLogger } from '../../src/worker/logger.js';

const notReady: V1Taint = { key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' };
const unreachable: V1Taint = {
  key: 'node.kubernetes.io/unreachable',
  effect: 'NoExecute',
  timeAdded: new Date('2026-12-05T10:00:00Z'),
};
const promoted: V1Taint = { key: 'kosmos.io/promoted', value: 'x', effect: 'NoSchedule' };
const tenants: V1Taint = { key: 'team.example/gpu', value: 'true', effect: 'NoSchedule' };

const hostNode = (taints: V1Taint[], ready = 'True'): V1Node => ({
  metadata: { name: 'node-a', labels: { 'kubernetes.io/os': 'linux' } },
  spec: { taints },
  status: {
    allocatable: { cpu: '4', memory: '8Gi' },
    conditions: [
      { type: 'Ready', status: ready, reason: ready === 'True' ? 'KubeletReady' : 'NodeStatusUnknown' },
    ],
  },
});

describe('a promoted node in the tenant', () => {
  it("carries its host node's health taints and no other host taint", () => {
    const n = tenantNodeFor(hostNode([notReady, promoted, unreachable]), new Date());
    expect(n.spec?.taints).toEqual([notReady, unreachable]);
    expect(virtualNode('vn', { cpu: '1', memory: '1Gi' }, new Date()).spec?.taints).toBeUndefined();
  });

  it("keeps the tenant's own taints and puts the host's health taints in place of its own", () => {
    const stale: V1Taint = { key: 'node.kubernetes.io/memory-pressure', effect: 'NoSchedule' };
    expect(withHealthTaints([tenants, stale], [notReady, promoted])).toEqual([tenants, notReady]);
    expect(withHealthTaints([tenants, stale], [])).toEqual([tenants]);
  });
});

/** NodeSync against one host node and one tenant node, recording what it writes to the tenant. */
function syncOf(host: V1Node, tenant: V1Node) {
  const writes: { kind: string; body: unknown }[] = [];
  const cfg = ClusterTreeConfig.parse({
    tenant: { namespace: 'team', name: 'vc1', uid: 'u' },
    hostNamespace: 'kvc-team-vc1',
    tenantKubeconfig: '/t/kubeconfig',
    listen: { address: '127.0.0.1', port: 1 },
    virtualNodeName: 'vc1-resources',
    quotaName: 'promoted',
  });
  const list = <T>(m: Map<string, T>) =>
    ({ get: (name: string) => m.get(name), list: () => [...m.values()] }) as never;
  const tenantCore = {
    patchNode: ({ body }: { body: unknown }) => (writes.push({ kind: 'node', body }), Promise.resolve({})),
    patchNodeStatus: ({ body }: { body: unknown }) => (
      writes.push({ kind: 'status', body }),
      Promise.resolve({})
    ),
  } as unknown as CoreV1Api;
  const sync = new NodeSync({
    cfg,
    tenantCore,
    tenantLeases: {} as CoordinationV1Api,
    hostNodes: list(new Map([['node-a', host]])),
    hostQuotas: list(new Map()),
    tenantNodes: list(new Map([['node-a', tenant]])),
    log: createLogger({ level: 'error' }),
  });
  return { sync, writes };
}

/** The tenant node as clusterTree made it from `host`, with what others added since. */
function inTenant(host: V1Node, extra: { labels?: Record<string, string>; taints?: V1Taint[] } = {}): V1Node {
  const n = tenantNodeFor(host, new Date('2026-12-05T09:00:00Z'));
  return {
    ...n,
    metadata: {
      ...n.metadata,
      uid: 'uid-a',
      resourceVersion: '7',
      labels: { ...n.metadata!.labels, ...extra.labels },
    },
    spec: { taints: [...(extra.taints ?? []), ...(n.spec?.taints ?? [])] },
  };
}

describe("clusterTree's sync of a promoted node", () => {
  it('writes nothing for labels or taints the tenant added, or for heartbeat times alone', async () => {
    const host = hostNode([]);
    const { sync, writes } = syncOf(
      host,
      inTenant(host, { labels: { 'team.example/rack': 'r1' }, taints: [tenants] }),
    );
    await sync.sync('node-a');
    expect(writes).toEqual([]);
  });

  it("copies the host node's health taints and conditions when they change, keeping the tenant's taint", async () => {
    const before = hostNode([]);
    const after = hostNode([notReady, unreachable, promoted], 'Unknown');
    const { sync, writes } = syncOf(after, inTenant(before, { taints: [tenants] }));
    await sync.sync('node-a');
    expect(writes.map((w) => w.kind)).toEqual(['node', 'status']);
    // Against the resourceVersion it read: a taint the tenant adds meanwhile makes a conflict.
    expect(writes[0]!.body).toEqual({
      metadata: { resourceVersion: '7' },
      spec: { taints: [tenants, notReady, unreachable] },
    });
    expect((writes[1]!.body as { status: V1Node['status'] }).status?.conditions?.[0]).toMatchObject({
      type: 'Ready',
      status: 'Unknown',
    });
  });

  it('takes the health taints off when the host node is healthy again, status unchanged', async () => {
    const host = hostNode([]);
    const tenant = inTenant(host, { taints: [tenants, notReady] });
    const { sync, writes } = syncOf(host, tenant);
    await sync.sync('node-a');
    expect(writes).toEqual([
      { kind: 'node', body: { metadata: { resourceVersion: '7' }, spec: { taints: [tenants] } } },
    ]);
  });
});
