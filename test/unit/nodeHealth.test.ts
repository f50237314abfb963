/**
 * A promoted node's health in the tenant is its host node's (ADR 12, decision 19): the tenant's
 * controller-manager runs no node-lifecycle controller, so clusterTree shows the host node's
 * conditions and its health taints (node.kubernetes.io/...), which the tenant's scheduler and
 * taint-eviction controller act on. The tenant's own taints and labels others add are kept, and
 * are no reason to write the node again.
 */
import {
  ApiException,
  type CoordinationV1Api,
  type CoreV1Api,
  type V1Node,
  type V1NodeSystemInfo,
  type V1Taint,
} from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { nodeHealthConfig } from '../../src/activities/clusterTree.js';
import { periodicPasses } from '../../src/clustertree/config.js';
import { NodeSync } from '../../src/clustertree/nodeSync.js';
import {
  statusDiffers,
  tenantNodeFor,
  virtualNode,
  withHealthTaints,
  withTransitionTimesKept,
} from '../../src/clustertree/tenantNodes.js';
import { createLogger } from '../../src/worker/logger.js';
import { listOf, nodeSyncConfig } from '../support/clusterTreeFakes.js';

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
    const vn = virtualNode('vn', { cpu: '1', memory: '1Gi' }, new Date());
    expect(vn.spec?.taints).toBeUndefined();
    // What a kubelet labels a node with, older manifests' selectors among them.
    expect(vn.metadata?.labels).toMatchObject({
      'kubernetes.io/os': 'linux',
      'beta.kubernetes.io/os': 'linux',
      'beta.kubernetes.io/arch': 'amd64',
    });
  });

  it("keeps the tenant's own taints and puts the host's health taints in place of its own", () => {
    const stale: V1Taint = { key: 'node.kubernetes.io/memory-pressure', effect: 'NoSchedule' };
    expect(withHealthTaints([tenants, stale], [notReady, promoted])).toEqual([tenants, notReady]);
    expect(withHealthTaints([tenants, stale], [])).toEqual([tenants]);
  });
});

/**
 * NodeSync against one host node and one tenant node, recording what it writes to the tenant.
 * `stale`: the API server's node has moved on from `tenant` (the informers' copy), so a write
 * against `tenant`'s resourceVersion conflicts, and a read returns `stale`.
 */
function syncOf(host: V1Node, tenant: V1Node, o: { fromHost?: boolean; stale?: V1Node } = {}) {
  const writes: { kind: string; body: unknown }[] = [];
  const cfg = nodeSyncConfig({ nodeHealthFromHost: o.fromHost ?? true });
  const list = listOf;
  const current = o.stale ?? tenant;
  const tenantCore = {
    patchNode: ({ body }: { body: { metadata?: { resourceVersion?: string } } }) => {
      writes.push({ kind: 'node', body });
      const rv = body.metadata?.resourceVersion;
      return rv && rv !== current.metadata?.resourceVersion
        ? Promise.reject(new ApiException(409, 'conflict', {}, {}))
        : Promise.resolve({});
    },
    readNode: () => (
      writes.push({ kind: 'read', body: undefined }),
      Promise.resolve(structuredClone(current))
    ),
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

describe("clusterTree's sync of a promoted node, continued", () => {
  it('reads the node again when its taint write conflicts (the informers are a write behind), then writes once more', async () => {
    const host = hostNode([notReady]);
    const tenant = inTenant(hostNode([]));
    // Meanwhile the tenant added a taint: the second write keeps it.
    const moved = {
      ...tenant,
      metadata: { ...tenant.metadata, resourceVersion: '8' },
      spec: { taints: [tenants] },
    };
    const { sync, writes } = syncOf(host, tenant, { stale: moved });
    await sync.sync('node-a');
    expect(writes.map((w) => w.kind)).toEqual(['node', 'read', 'node']);
    expect(writes[2]!.body).toEqual({
      metadata: { resourceVersion: '8' },
      spec: { taints: [tenants, notReady] },
    });
  });

  it('sees the same taint time as the same, whether the API gave a Date or a string', async () => {
    const host = hostNode([unreachable]);
    const tenant = inTenant(host);
    tenant.spec = { taints: [{ ...unreachable, timeAdded: '2026-12-05T10:00:00Z' as unknown as Date }] };
    const { sync, writes } = syncOf(host, tenant);
    await sync.sync('node-a');
    expect(writes).toEqual([]);
  });

  it("writes the status for what clusterTree copies (node info, a condition's message), not for what the tenant added or a key order", async () => {
    const host = hostNode([]);
    host.status!.capacity = { cpu: '4', memory: '8Gi', pods: '110' };
    host.status!.nodeInfo = { kubeletVersion: 'v1.37.2', osImage: 'Debian' } as V1NodeSystemInfo;
    const tenant = inTenant(host);
    // The tenant advertises an extended resource on the node, as the Kubernetes docs show; the
    // API server gives the node info's keys in its own order.
    tenant.status!.capacity = { ...tenant.status!.capacity, 'example.com/dongle': '4' };
    tenant.status!.nodeInfo = { osImage: 'Debian', kubeletVersion: 'v1.37.2' } as V1NodeSystemInfo;
    const quiet = syncOf(host, tenant);
    await quiet.sync.sync('node-a');
    expect(quiet.writes).toEqual([]);

    const upgraded = structuredClone(host);
    upgraded.status!.nodeInfo!.kubeletVersion = 'v1.37.3';
    const afterUpgrade = syncOf(upgraded, tenant);
    await afterUpgrade.sync.sync('node-a');
    expect(afterUpgrade.writes.map((w) => w.kind)).toEqual(['status']);

    const said = structuredClone(host);
    said.status!.conditions![0]!.message = 'container runtime is down';
    const afterMessage = syncOf(said, tenant);
    await afterMessage.sync.sync('node-a');
    expect(afterMessage.writes.map((w) => w.kind)).toEqual(['status']);
  });

  it("writes a promoted node's transition times as its host node's; the virtual node keeps its own while its status holds", async () => {
    // A host-backed node: the host's time, even where the tenant shows another (a flip and back
    // on the host between two syncs).
    const host = hostNode([]);
    host.status!.conditions![0]!.lastTransitionTime = new Date('2026-12-05T11:00:00Z');
    host.status!.conditions![0]!.message = 'container runtime is down';
    const tenant = inTenant(hostNode([]));
    tenant.status!.conditions![0]!.lastTransitionTime = new Date('2026-12-01T00:00:00Z');
    const { sync, writes } = syncOf(host, tenant);
    await sync.sync('node-a');
    const status = (writes[0]!.body as { status: V1Node['status'] }).status!;
    expect(status.conditions![0]!.lastTransitionTime).toEqual(new Date('2026-12-05T11:00:00Z'));

    // The virtual node is made with the time of each sync: a write (its quota grew) keeps the
    // time its Ready condition has had since it became Ready.
    const cfg = nodeSyncConfig({ nodeHealthFromHost: true });
    const quota = (cpu: string) => ({ spec: { hard: { 'requests.cpu': cpu, 'requests.memory': '4Gi' } } });
    const made = virtualNode(
      cfg.virtualNodeName,
      { cpu: '2', memory: '4Gi' },
      new Date('2026-12-01T00:00:00Z'),
    );
    const virtualWrites: unknown[] = [];
    const virtualSync = new NodeSync({
      cfg,
      tenantCore: {
        patchNodeStatus: ({ body }: { body: unknown }) => (virtualWrites.push(body), Promise.resolve({})),
      } as unknown as CoreV1Api,
      tenantLeases: {} as CoordinationV1Api,
      hostNodes: listOf(new Map()),
      hostQuotas: listOf(new Map([[cfg.quotaName, quota('4')]])),
      tenantNodes: listOf(
        new Map([[cfg.virtualNodeName, { ...made, metadata: { ...made.metadata, uid: 'v' } }]]),
      ),
      log: createLogger({ level: 'error' }),
    });
    await virtualSync.sync(cfg.virtualNodeName);
    const grown = (virtualWrites[0] as { status: V1Node['status'] }).status!;
    expect(grown.capacity).toMatchObject({ cpu: '4' });
    expect(grown.conditions![0]!.lastTransitionTime).toEqual(new Date('2026-12-01T00:00:00Z'));
    // A status that changes is a transition: a new time.
    expect(
      withTransitionTimesKept(
        {
          conditions: [
            { type: 'Ready', status: 'False', lastTransitionTime: new Date('2026-12-05T12:00:00Z') },
          ],
        },
        made.status,
      ).conditions![0]!.lastTransitionTime,
    ).toEqual(new Date('2026-12-05T12:00:00Z'));
  });

  it('sees the virtual node as the API server gives it back as unchanged: canonical quantities, keys in a model order', () => {
    const kubelet = { address: '127.0.0.1', port: 10250 };
    const want = virtualNode('vn', { cpu: '2', memory: '4Gi' }, new Date(), kubelet, '10.0.0.1');
    const have = structuredClone(want);
    // 10000 pods reads back as 10k; a list gives client-node's models, keys in their order.
    have.status!.capacity = { ...have.status!.capacity, pods: '10k' };
    have.status!.allocatable = { ...have.status!.allocatable, pods: '10k' };
    have.status!.addresses = have.status!.addresses!.map((a) => ({ address: a.address, type: a.type }));
    have.status!.conditions![0]!.lastTransitionTime = new Date('2026-12-01T00:00:00Z');
    expect(statusDiffers(have, want)).toBe(false);
    have.status!.allocatable = { ...have.status!.allocatable, cpu: '1' };
    expect(statusDiffers(have, want)).toBe(true);
  });

  it("leaves health taints alone for a configuration from before (the tenant's controller-manager writes them)", async () => {
    const host = hostNode([notReady]);
    const { sync, writes } = syncOf(host, inTenant(hostNode([]), { taints: [unreachable] }), {
      fromHost: false,
    });
    await sync.sync('node-a');
    expect(writes).toEqual([]);
  });
});

describe("the operator's clusterTree configuration", () => {
  const step = {
    ref: { namespace: 'team', name: 'vc1', uid: 'u' },
    allocation: {
      id: 'team-vc1-0',
      dir: '/x',
      address: '127.0.0.1',
      ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
      serviceCIDR: '10.96.0.0/12',
    },
  };

  it('takes node health from the host, with 60 s renewals for 240 s and no status rewrite, unless the pass kept an old controller-manager', () => {
    const parsed = nodeSyncConfig(nodeHealthConfig(step));
    expect(parsed).toMatchObject({
      nodeHealthFromHost: true,
      heartbeatIntervalMs: 60_000,
      leaseDurationSeconds: 240,
    });
    // Nothing reads a status's heartbeat times: no status written again unchanged (decision 20).
    expect(periodicPasses(parsed).map((p) => p.name)).toEqual(['leases', 'resync']);
    // The clusterTree-only pass of a workflow from before clusterTree: clusterTree's defaults.
    const kept = nodeSyncConfig(nodeHealthConfig({ ...step, nodeHealthFromHost: false }));
    expect(kept).toMatchObject({
      nodeHealthFromHost: false,
      heartbeatIntervalMs: 10_000,
      leaseDurationSeconds: 40,
    });
    // Its controller-manager may judge nodes: the status every 5 minutes, as a kubelet's.
    expect(periodicPasses(kept).find((p) => p.name === 'node status')).toMatchObject({ ms: 300_000 });
  });
});
