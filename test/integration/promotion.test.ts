/**
 * Promotion rules between tenants and the host, on kwok nodes: a node named by two tenants
 * stays with the first; an unknown node is promoted when it appears; control-plane nodes and
 * nodes running host workloads are refused; promoted CPU/memory is one virtual node capped by a
 * host ResourceQuota; two tenants with the same names never collide or see each other.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUOTA_NAME, VIRTUAL_NODE } from '../../src/activities/promotion.js';
import { merge } from '../../src/api/kubeClient.js';
import { parseQuantity, type VirtualCluster } from '../../src/api/virtualCluster.js';
import { Promotion, hostName, hostNamespace } from '../../src/clustertree/naming.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createKwokNodes,
  createNamespace,
  createVirtualCluster,
  deleteNodes,
  deleteVirtualCluster,
  eventually,
  host,
  kubectl,
  newStateDir,
  refOf,
  tenantCore,
  tenantKubeconfig,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
let stateDir: string;
const s = randomUUID().slice(0, 5);
const SHARED = `pr-${s}-shared`;
const FREE = `pr-${s}-free`;
const LATE = `pr-${s}-late`;
const CONTROL_PLANE = `pr-${s}-cp`;
const BUSY = `pr-${s}-busy`;
const ALL = [SHARED, FREE, LATE, CONTROL_PLANE, BUSY];

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('promotion');
  await createKwokNodes([SHARED, FREE, BUSY]);
  await createKwokNodes([CONTROL_PLANE], { 'node-role.kubernetes.io/control-plane': '' });
  operator = await testOperator({ stateDir, taskQueue: `promotion-${randomUUID()}`, namespace });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
  await deleteNodes(ALL);
});

const condition = (vc: VirtualCluster | undefined, type: string) =>
  vc?.status?.conditions?.find((c) => c.type === type);

describe('promotion', () => {
  it('keeps a node with the first tenant, refuses control-plane and busy nodes, promotes late nodes', async () => {
    // A host workload on BUSY that is not a DaemonSet pod: the node cannot be handed over.
    await eventually('the service account of the test namespace', () =>
      host().core.readNamespacedServiceAccount({ name: 'default', namespace }),
    );
    await host().core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'host-workload' },
        spec: { nodeName: BUSY, containers: [{ name: 'c', image: 'host/app' }] },
      },
    });
    await createVirtualCluster(namespace, 'first', { promoteResources: { nodes: [SHARED] } });
    const first = await waitForPhase(namespace, 'first', 'Ready');
    expect(first.status?.promoted?.nodes).toEqual([SHARED]);

    await createVirtualCluster(namespace, 'second', {
      promoteResources: { nodes: [SHARED, FREE, LATE, CONTROL_PLANE, BUSY] },
    });
    const second = await waitForPhase(namespace, 'second', 'Ready');
    expect(second.status?.promoted?.nodes).toEqual([FREE]);
    const pending = Object.fromEntries((second.status?.promoted?.pending ?? []).map((p) => [p.node, p]));
    expect(pending[SHARED]?.reason).toBe('NodeOwnedByAnother');
    expect(pending[SHARED]?.message).toContain(`${namespace}/first`);
    expect(pending[LATE]?.reason).toBe('NodeNotFound');
    expect(pending[CONTROL_PLANE]?.reason).toBe('ControlPlaneNode');
    expect(pending[BUSY]?.reason).toBe('NodeHasWorkloads');
    expect(pending[BUSY]?.message).toContain('host-workload');
    const cond = condition(second, 'NodesPromoted');
    expect(cond).toMatchObject({ status: 'False', reason: 'NodesPending' });
    expect(cond?.message).toContain(LATE);
    // The first tenant keeps its node: label and taint are still its own.
    const shared = await host().core.readNode({ name: SHARED });
    expect(shared.metadata?.annotations?.[Promotion.annotation]).toBe(`${namespace}/first`);

    const secondKc = await tenantKubeconfig(stateDir, second);
    const tenantNodes = async () =>
      (await tenantCore(secondKc).listNode()).items.map((n) => n.metadata!.name!).sort();
    expect(await tenantNodes()).toEqual([FREE]);

    // The unknown node appears: promoted on the next retry, without any spec change.
    await createKwokNodes([LATE]);
    await eventually(
      'the late node in the second tenant',
      async () => JSON.stringify(await tenantNodes()) === JSON.stringify([FREE, LATE].sort()),
    );
    // The first tenant goes away: its node passes to the second.
    await deleteVirtualCluster(namespace, 'first');
    await waitForGone(namespace, 'first');
    await eventually(
      'the shared node in the second tenant',
      async () => JSON.stringify(await tenantNodes()) === JSON.stringify([FREE, LATE, SHARED].sort()),
    );
    const after = await host().getVirtualCluster({ namespace, name: 'second' });
    await eventually('status to show three nodes', async () => {
      const v = await host().getVirtualCluster({ namespace, name: 'second' });
      return v?.status?.promoted?.nodeCount === 3;
    });
    expect(after).toBeDefined();
    await deleteVirtualCluster(namespace, 'second');
    await waitForGone(namespace, 'second');
    for (const n of [SHARED, FREE, LATE])
      expect((await host().core.readNode({ name: n })).metadata?.labels?.[Promotion.label]).toBeUndefined();
  });

  it('promotes CPU and memory as one virtual node; the host quota holds the promoted amount', async () => {
    await createVirtualCluster(namespace, 'res', {
      promoteResources: { resources: { cpu: 2, memory: '4Gi' } },
    });
    const vc = await waitForPhase(namespace, 'res', 'Ready');
    expect(vc.status?.promoted).toMatchObject({ nodeCount: 0, cpu: '2', memory: '4Gi' });
    const kc = await tenantKubeconfig(stateDir, vc);
    const tenant = tenantCore(kc);
    const node = await tenant.readNode({ name: VIRTUAL_NODE });
    expect(node.status?.allocatable).toMatchObject({ cpu: '2', memory: '4Gi' });
    const hostNs = hostNamespace(refOf(vc));
    const quota = await host().core.readNamespacedResourceQuota({ name: QUOTA_NAME, namespace: hostNs });
    expect(quota.spec?.hard).toMatchObject({ 'requests.cpu': '2', 'requests.memory': '4Gi' });

    const pod = (name: string, cpu: string): V1Pod => ({
      metadata: { name },
      spec: { containers: [{ name: 'c', image: 'app', resources: { requests: { cpu, memory: '1Gi' } } }] },
    });
    await tenant.createNamespacedPod({ namespace: 'default', body: pod('fits', '1') });
    await tenant.createNamespacedPod({ namespace: 'default', body: pod('too-big', '3') });
    await eventually('the fitting pod Running on the host', async () => {
      const p = await tenant.readNamespacedPod({ name: 'fits', namespace: 'default' });
      return p.status?.phase === 'Running';
    });
    const hostPod = await host().core.readNamespacedPod({
      name: hostName('default', 'fits'),
      namespace: hostNs,
    });
    // The host scheduler placed it on a node nobody promoted.
    const hostNode = await host().core.readNode({ name: hostPod.spec!.nodeName! });
    expect(hostNode.metadata?.labels?.[Promotion.label]).toBeUndefined();
    let used: unknown;
    await eventually('the quota to count the pod', async () => {
      const q = await host().core.readNamespacedResourceQuota({ name: QUOTA_NAME, namespace: hostNs });
      used = {
        status: q.status,
        pods: (await host().core.listNamespacedPod({ namespace: hostNs })).items.map((p) => [
          p.metadata?.name,
          p.spec?.priorityClassName,
          p.status?.phase,
        ]),
      };
      if (parseQuantity(q.status?.used?.['requests.cpu'] ?? '0') === 1) return true;
      throw new Error(`quota and pods now: ${JSON.stringify(used)}`);
    });

    const big = await eventually('the too-big pod to be reported unschedulable', async () => {
      const p = await tenant.readNamespacedPod({ name: 'too-big', namespace: 'default' });
      const c = p.status?.conditions?.find((x) => x.type === 'PodScheduled');
      return c?.status === 'False'
        ? { phase: p.status?.phase, reason: c.reason, message: c.message }
        : undefined;
    });
    expect(big.phase).toBe('Pending');
    expect(big.reason).toBe('Unschedulable');
    expect(big.message).toContain('Insufficient cpu');
    // Nothing of it reached the host.
    await expect(
      host().core.readNamespacedPod({ name: hostName('default', 'too-big'), namespace: hostNs }),
    ).rejects.toThrow();

    // The host quota holds even for a pod that gets past the tenant: a direct host pod in the
    // promoted-resources class beyond the quota is refused by the host API server.
    await expect(
      host().core.createNamespacedPod({
        namespace: hostNs,
        body: {
          metadata: { name: 'over-quota' },
          spec: {
            priorityClassName: 'kosmos-vc-promoted-resources',
            containers: [{ name: 'c', image: 'app', resources: { requests: { cpu: '2', memory: '1Gi' } } }],
          },
        },
      }),
    ).rejects.toThrow(/exceeded quota/);

    // Growing the promoted amount lets the pending pod run.
    await kubectl(
      (await import('vitest')).inject('hostKubeconfig'),
      'patch',
      'vc',
      'res',
      '-n',
      namespace,
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { promoteResources: { resources: { cpu: 8, memory: '8Gi' } } } }),
    );
    await eventually('the pod to run after the resize', async () => {
      const p = await tenant.readNamespacedPod({ name: 'too-big', namespace: 'default' });
      return p.status?.phase === 'Running';
    });
    expect((await tenant.readNode({ name: VIRTUAL_NODE })).status?.allocatable).toMatchObject({ cpu: '8' });

    // An extended resource the tenant advertises on its virtual node (as an admin or a device
    // plugin would) is the tenant scheduler's to count; the host pod does not ask the host for it,
    // since no host node has it, and the pod runs.
    await tenant.patchNodeStatus(
      {
        name: VIRTUAL_NODE,
        body: {
          status: { capacity: { 'example.com/dongle': '4' }, allocatable: { 'example.com/dongle': '4' } },
        },
      },
      merge,
    );
    // As the API server gives it back (10000 pods read as 10k, the tenant's dongle beside what
    // clusterTree writes), the virtual node is no cause for a status write: its status, heartbeat
    // and transition times included, stays as it is over a resync (5 s here; ADR 12, decision 20).
    const vnStatus = (await tenant.readNode({ name: VIRTUAL_NODE })).status;
    expect(vnStatus?.capacity).toMatchObject({ pods: '10k', 'example.com/dongle': '4' });
    await new Promise((r) => setTimeout(r, 7_000));
    expect((await tenant.readNode({ name: VIRTUAL_NODE })).status).toEqual(vnStatus);
    const dongle: V1Pod = pod('dongle', '100m');
    dongle.spec!.containers[0]!.resources = {
      requests: { cpu: '100m', memory: '100Mi', 'example.com/dongle': '3' },
      limits: { 'example.com/dongle': '3' },
    };
    await tenant.createNamespacedPod({ namespace: 'default', body: dongle });
    await eventually('the pod with an extended resource Running', async () => {
      const p = await tenant.readNamespacedPod({ name: 'dongle', namespace: 'default' });
      return p.status?.phase === 'Running' && p.spec?.nodeName === VIRTUAL_NODE;
    });
    const hostDongle = await host().core.readNamespacedPod({
      name: hostName('default', 'dongle'),
      namespace: hostNs,
    });
    expect(hostDongle.spec?.containers[0]?.resources?.requests?.['example.com/dongle']).toBeUndefined();
    expect(hostDongle.metadata?.annotations?.['kosmos.io/tenant-only-resources']).toBe('example.com/dongle');
    // The tenant scheduler counts it: three of four are taken, a second such pod does not fit.
    await tenant.createNamespacedPod({
      namespace: 'default',
      body: { ...dongle, metadata: { name: 'dongle-2' } },
    });
    await eventually('the second dongle pod to be unschedulable in the tenant', async () => {
      const p = await tenant.readNamespacedPod({ name: 'dongle-2', namespace: 'default' });
      const c = p.status?.conditions?.find((x) => x.type === 'PodScheduled');
      return c?.status === 'False' && /Insufficient example\.com\/dongle/.test(c.message ?? '');
    });
    await deleteVirtualCluster(namespace, 'res');
    await waitForGone(namespace, 'res');
  });

  it('two tenants with the same namespaces and pod names never collide or see each other', async () => {
    const resources = { promoteResources: { resources: { cpu: 4, memory: '8Gi' } } };
    await createVirtualCluster(namespace, 'iso-a', resources);
    await createVirtualCluster(namespace, 'iso-b', resources);
    const [a, b] = await Promise.all([
      waitForPhase(namespace, 'iso-a', 'Ready'),
      waitForPhase(namespace, 'iso-b', 'Ready'),
    ]);
    const kcA = await tenantKubeconfig(stateDir, a);
    const kcB = await tenantKubeconfig(stateDir, b);
    for (const [kc, image] of [
      [kcA, 'app:a'],
      [kcB, 'app:b'],
    ] as const) {
      await kubectl(kc, 'create', 'namespace', 'shop');
      // The tenant's controller-manager gives a new namespace its service account shortly after.
      await eventually('the service account in shop', () =>
        tenantCore(kc).readNamespacedServiceAccount({ name: 'default', namespace: 'shop' }),
      );
      await kubectl(kc, 'run', 'web', '-n', 'shop', `--image=${image}`);
      await kubectl(kc, 'create', 'configmap', 'cfg', '-n', 'shop', `--from-literal=who=${image}`);
    }
    const nsA = hostNamespace(refOf(a));
    const nsB = hostNamespace(refOf(b));
    expect(nsA).not.toBe(nsB);
    for (const [kc, ns, image] of [
      [kcA, nsA, 'app:a'],
      [kcB, nsB, 'app:b'],
    ] as const) {
      await eventually(`web Running in ${ns}`, async () => {
        const p = await tenantCore(kc).readNamespacedPod({ name: 'web', namespace: 'shop' });
        return p.status?.phase === 'Running';
      });
      const hp = await host().core.readNamespacedPod({ name: hostName('shop', 'web'), namespace: ns });
      expect(hp.spec?.containers[0]?.image).toBe(image);
    }
    // Each tenant sees its own pod only, with its own image; nothing of the host.
    for (const [kc, image] of [
      [kcA, 'app:a'],
      [kcB, 'app:b'],
    ] as const) {
      const pods = (await tenantCore(kc).listPodForAllNamespaces()).items;
      expect(pods.map((p) => `${p.metadata!.namespace}/${p.metadata!.name}`)).toEqual(['shop/web']);
      expect(pods[0]!.spec!.containers[0]!.image).toBe(image);
      const nsNames = (await tenantCore(kc).listNamespace()).items.map((n) => n.metadata!.name);
      expect(nsNames).not.toContain(nsA);
      expect(nsNames).not.toContain(nsB);
    }
    await Promise.all([deleteVirtualCluster(namespace, 'iso-a'), deleteVirtualCluster(namespace, 'iso-b')]);
    await Promise.all([waitForGone(namespace, 'iso-a'), waitForGone(namespace, 'iso-b')]);
  });
});
