/**
 * The design's E2E 1 and 2 on the kubernetes runtime (ADR 14), as workloads.test.ts runs them on
 * the process runtime: a tenant whose control plane runs as pods on the real node is promoted that
 * very node (its own pods there do not make it busy); real containers run on it, kubectl exec
 * and logs reach them through clusterTree's pod, a pod's in-cluster client reaches the tenant's
 * API server pod, and a Service carries traffic by name, FQDN and ClusterIP through the tenant's
 * CoreDNS pod. Its API server is exposed as a LoadBalancer, the test playing the load balancer's
 * controller: every kubectl call here goes through the address the kubeconfig names. Deleted,
 * the tenant gives the node back and leaves none of its pods.
 */
import { type CoreV1Event, DiscoveryV1Api } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it, onTestFailed } from 'vitest';
import type { VirtualCluster } from '../../src/api/virtualCluster.js';
import { tenantId } from '../../src/activities/index.js';
import { Promotion, hostNamespace, promotionTaint } from '../../src/clustertree/naming.js';
import { merge } from '../../src/api/kubeClient.js';
import { routeOf } from '../../src/node/network.js';
import { NodeNet } from '../../src/node/realNode.js';
import { COMPONENT_LABEL, CONTROL_PLANE_LABEL, ownerLabel } from '../../src/runtime/podWorkload.js';
import { CLUSTERTREE_NODE_FLAGS } from '../../src/runtime/nodeFlags.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
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
  setSleep,
} from '../support/harness.js';
import { runClientAndWeb, runningPod, serviceCarriesTraffic, testImages } from '../support/workloads.js';

const realNode = inject('realNode');
/**
 * The load balancer's address: in the simulated pods' range, which the real node blackholes (never
 * the default route). The test routes this one address to the node's bridge, as a load balancer's
 * network would bring it to the node, where the node's proxy rules for the Service take it.
 */
const LB_ADDRESS = '10.250.255.254';
const ipRoute = (...args: string[]) => promisify(execFile)('ip', ['route', ...args]);
let operator: Operator;
let namespace: string;
let stateDir: string;
let vc: VirtualCluster;
let kubeconfig: string;

beforeAll(async () => {
  if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
  stateDir = await newStateDir();
  await ipRoute('replace', `${LB_ADDRESS}/32`, 'dev', NodeNet.bridge);
  namespace = await createNamespace('podwl');
  // Its pods tolerate no taint but their own tenant's promotion (no tolerate-all): they come back
  // onto the node promoted to it (sleep and wake below make them all again).
  operator = await testOperator({
    stateDir,
    taskQueue: `podwl-${randomUUID()}`,
    namespace,
    pods: true,
    podTolerations: [],
  });
  const created = await createVirtualCluster(namespace, 'e2e', {
    promoteResources: { nodes: [realNode] },
    apiServer: {
      expose: { type: 'LoadBalancer', address: LB_ADDRESS, annotations: { 'example.com/lb': 'a' } },
    },
  });
  // The load balancer's controller: the host's Service gets the address, the node's proxy
  // carries it to the API server's pod.
  const hostNs = hostNamespace(refOf(created));
  await eventually('the API server Service', () =>
    host()
      .core.readNamespacedService({ name: 'kosmos-apiserver', namespace: hostNs })
      .catch(() => undefined),
  );
  await host().core.patchNamespacedServiceStatus(
    {
      name: 'kosmos-apiserver',
      namespace: hostNs,
      body: { status: { loadBalancer: { ingress: [{ ip: LB_ADDRESS }] } } },
    },
    merge,
  );
  vc = await eventually(
    'tenant e2e Ready',
    async () => {
      const v = await host().getVirtualCluster({ namespace, name: 'e2e' });
      if (v?.status?.phase === 'Failed') throw new Error(v.status.message);
      return v?.status?.phase === 'Ready' ? v : undefined;
    },
    240_000,
  );
  kubeconfig = await tenantKubeconfig(stateDir, vc);
}, 300_000);

afterAll(async () => {
  // Gives the real node back to the tests after this one, whatever failed here.
  if (namespace && (await host().getVirtualCluster({ namespace, name: 'e2e' })))
    await deleteVirtualCluster(namespace, 'e2e').catch(() => undefined);
  await waitForGone(namespace, 'e2e', 240_000).catch(() => undefined);
  await operator?.stop({ stopTenants: true });
  await host()
    .core.deleteNamespace({ name: namespace })
    .catch(() => undefined);
  await ipRoute('del', `${LB_ADDRESS}/32`, 'dev', NodeNet.bridge).catch(() => undefined);
}, 300_000);

const k = (...args: string[]) => kubectl(kubeconfig, ...args);

/**
 * What a failed step here needs to be told apart afterwards (the load balancer's address went
 * nowhere once, in CI, right after a wake): the host namespace's pods with their readiness and
 * restarts, the API server's endpoints and load balancer, the route, the latest events.
 */
async function hostState(): Promise<string> {
  const ns = hostNamespace(refOf(vc));
  const pods = (await host().core.listNamespacedPod({ namespace: ns })).items.map((p) => ({
    pod: p.metadata?.name,
    phase: p.status?.phase,
    deleting: !!p.metadata?.deletionTimestamp,
    ready: p.status?.conditions?.find((c) => c.type === 'Ready'),
    containers: p.status?.containerStatuses?.map((c) => ({
      restarts: c.restartCount,
      last: c.lastState?.terminated,
    })),
  }));
  const slices = (
    await host().kubeConfig.makeApiClient(DiscoveryV1Api).listNamespacedEndpointSlice({
      namespace: ns,
      labelSelector: 'kubernetes.io/service-name=kosmos-apiserver',
    })
  ).items.map((s) => s.endpoints);
  const svc = await host().core.readNamespacedService({ name: 'kosmos-apiserver', namespace: ns });
  const at = (e: CoreV1Event) => new Date(e.lastTimestamp ?? e.eventTime ?? 0).toISOString();
  const events = (await host().core.listNamespacedEvent({ namespace: ns })).items
    .sort((a, b) => at(a).localeCompare(at(b)))
    .slice(-25)
    .map((e) => `${at(e)} ${e.involvedObject.name} ${e.reason}: ${e.message}`);
  const route = (await ipRoute('get', LB_ADDRESS).catch((e: Error) => ({ stdout: e.message }))).stdout;
  return JSON.stringify({ pods, slices, loadBalancer: svc.status?.loadBalancer, route, events }, null, 1);
}

describe('workloads of a control plane in pods', () => {
  beforeEach(() => {
    onTestFailed(async () => {
      console.log(`host state at the failure:\n${await hostState().catch((e: Error) => e.message)}`);
    });
  });

  it('E2E 1: promoted the node its own control plane runs on; real containers, exec, logs, in-cluster API', async () => {
    const ref = refOf(vc);
    const hostNs = hostNamespace(ref);
    const controlPlane = (
      await host().core.listNamespacedPod({
        namespace: hostNs,
        labelSelector: `${CONTROL_PLANE_LABEL}=${ownerLabel(tenantId(ref))}`,
      })
    ).items;
    expect(controlPlane).toHaveLength(6);
    // clusterTree's pod runs Node.js with its V8 flags (ADR 12, decision 12).
    const tree = controlPlane.find((p) => p.metadata?.labels?.[COMPONENT_LABEL] === 'clustertree');
    expect(tree?.spec?.containers[0]?.args?.slice(0, CLUSTERTREE_NODE_FLAGS.length)).toEqual([
      ...CLUSTERTREE_NODE_FLAGS,
    ]);
    // Reached through the load balancer's address, which its certificate names.
    const svc = await host().core.readNamespacedService({ name: 'kosmos-apiserver', namespace: hostNs });
    expect(svc.spec?.type).toBe('LoadBalancer');
    expect(svc.metadata?.annotations?.['example.com/lb']).toBe('a');
    expect(vc.status?.apiServerEndpoint).toBe(`https://${LB_ADDRESS}:443`);
    expect((await k('config', 'view', '-o', 'jsonpath={.clusters[0].cluster.server}')).trim()).toBe(
      `https://${LB_ADDRESS}:443`,
    );
    // Its ClusterIP, as the tenant's `kubernetes` endpoint, goes to the node's bridge, never
    // the default route.
    expect(await routeOf(svc.spec!.clusterIP!)).toContain(`dev ${NodeNet.bridge} `);
    for (const p of controlPlane) {
      expect(p.spec?.nodeName).toBe(realNode);
      // Where the tenant's promotion taint keeps others' pods off, its own come back.
      expect(p.spec?.tolerations).toContainEqual({
        ...promotionTaint(ref),
        operator: 'Equal',
        effect: 'NoSchedule',
      });
    }
    // Promoted, not pending: the tenant's own pods on the node did not count as host workloads.
    const promoted = await eventually('the real node promoted', async () => {
      const v = await host().getVirtualCluster({ namespace, name: 'e2e' });
      return v?.status?.promoted?.nodes?.includes(realNode) ? v.status.promoted : undefined;
    });
    expect(promoted.pending ?? []).toEqual([]);
    expect(promoted.nodes).toEqual([realNode]);
    await eventually('the real node Ready in the tenant', async () => {
      const n = await tenantCore(kubeconfig)
        .readNode({ name: realNode })
        .catch(() => undefined);
      return n?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') || undefined;
    });

    const images = await testImages();
    const client = await runClientAndWeb(kubeconfig, images);
    expect(client.spec?.nodeName).toBe(realNode);
    // Through the tenant API server's pod to clusterTree's kubelet endpoint to the host pod.
    expect(await k('exec', 'client', '--', 'sh', '-c', 'echo from $(hostname)')).toBe('from client\n');
    await k('run', 'talker', `--image=${images.busybox}`, '--restart=Never', '--', 'echo', 'said once');
    await eventually('the logs of talker', async () =>
      (await k('logs', 'talker').catch(() => '')) === 'said once\n' ? true : undefined,
    );

    // A pod's in-cluster client reaches the tenant's API server pod, not the host's.
    await k(
      'create',
      'clusterrolebinding',
      'default-view',
      '--clusterrole=view',
      '--serviceaccount=default:default',
    );
    await k(
      'run',
      'lister',
      `--image=${images.kubectl}`,
      '--restart=Never',
      '--command',
      '--',
      'sleep',
      '3600',
    );
    await runningPod(kubeconfig, 'lister');
    const listed = await eventually('an in-cluster list of pods', async () => {
      const out = await k('exec', 'lister', '--', 'kubectl', 'get', 'pods', '-A', '-o', 'name').catch(
        () => '',
      );
      return out.includes('pod/lister') ? out : undefined;
    });
    expect(listed).toContain('pod/client');
    // Nothing of the host: its control-plane pods and the host names of tenant pods ("-x-").
    expect(listed).not.toMatch(/-x-|kube-apiserver|etcd/);
    const tenantApiIP = (
      await tenantCore(kubeconfig).readNamespacedService({ name: 'kubernetes', namespace: 'default' })
    ).spec!.clusterIP!;
    expect(await k('exec', 'lister', '--', 'env')).toContain(`KUBERNETES_SERVICE_HOST=${tenantApiIP}\n`);
    // The `kubernetes` endpoint the tenant's API server advertises answers such a client too. Its
    // lease reconciler writes it every 10 s: a CI run once found none yet, seconds after Ready.
    const endpoint = await eventually(
      'the tenant API server to advertise its kubernetes endpoint',
      async () => {
        const out = await k(
          'get',
          'endpoints',
          'kubernetes',
          '-o',
          'jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}',
        ).catch(() => '');
        return /^[0-9.]+:[0-9]+$/.test(out.trim()) ? out.trim() : undefined;
      },
      30_000,
    );
    // (In-cluster configuration from the environment: a --server flag would drop its credentials.)
    const [endpointHost, endpointPort] = endpoint.split(':');
    expect(
      await k(
        'exec',
        'lister',
        '--',
        'env',
        `KUBERNETES_SERVICE_HOST=${endpointHost}`,
        `KUBERNETES_SERVICE_PORT=${endpointPort}`,
        'kubectl',
        'get',
        'pod',
        'lister',
        '-o',
        'name',
      ),
    ).toBe('pod/lister\n');
  });

  it('E2E 2: a Service answers by short name, FQDN and ClusterIP; scaling and deletion show', async () => {
    await serviceCarriesTraffic(kubeconfig, hostNamespace(refOf(vc)));
  });

  it('sleeps on spec.sleep: none of its control-plane pods runs, its data, node and workloads stay; wakes with them', async () => {
    const ref = refOf(vc);
    const selector = `${CONTROL_PLANE_LABEL}=${ownerLabel(tenantId(ref))}`;
    await k('create', 'configmap', 'kept', '--from-literal=answer=42');
    const sleep = (on: boolean) => setSleep(namespace, 'e2e', on);
    await sleep(true);
    await eventually(
      'e2e asleep',
      async () => {
        const v = await host().getVirtualCluster({ namespace, name: 'e2e' });
        return v?.status?.phase === 'Sleeping' && v.status.reason === 'Asleep' ? v : undefined;
      },
      180_000,
    );
    expect((await host().core.listPodForAllNamespaces({ labelSelector: selector })).items).toEqual([]);
    // etcd's claim stays, and so do the node and the tenant's workloads on it.
    expect(
      (await host().core.listNamespacedPersistentVolumeClaim({ namespace: hostNamespace(ref) })).items.map(
        (c) => c.status?.phase,
      ),
    ).toEqual(['Bound']);
    expect((await host().getVirtualCluster({ namespace, name: 'e2e' }))?.status?.promoted?.nodes).toEqual([
      realNode,
    ]);
    await expect(k('get', 'ns', '--request-timeout=3s')).rejects.toThrow();

    await sleep(false);
    await eventually(
      'e2e awake',
      async () => {
        const v = await host().getVirtualCluster({ namespace, name: 'e2e' });
        if (v?.status?.phase === 'Sleeping' && v.status.reason === 'WakeFailed')
          throw new Error(v.status.message);
        return v?.status?.phase === 'Ready' ? v : undefined;
      },
      240_000,
    );
    // The same objects through the same kubeconfig (the load balancer's address), its pods back.
    expect(await k('get', 'configmap', 'kept', '-o', 'jsonpath={.data.answer}')).toBe('42');
    expect((await k('get', 'pod', 'client', '-o', 'jsonpath={.status.phase}')).trim()).toBe('Running');
    expect((await host().core.listPodForAllNamespaces({ labelSelector: selector })).items).toHaveLength(6);
  });

  it('deleted, gives the node back and leaves none of its pods', async () => {
    const ref = refOf(vc);
    await deleteVirtualCluster(namespace, 'e2e');
    await waitForGone(namespace, 'e2e', 240_000);
    const node = await host().core.readNode({ name: realNode });
    expect(node.metadata?.labels?.[Promotion.label]).toBeUndefined();
    expect((node.spec?.taints ?? []).filter((t) => t.key === Promotion.taint)).toEqual([]);
    expect(
      (
        await host().core.listPodForAllNamespaces({
          labelSelector: `${CONTROL_PLANE_LABEL}=${ownerLabel(tenantId(ref))}`,
        })
      ).items,
    ).toEqual([]);
    await eventually(
      'the host namespace gone',
      async () =>
        (await host()
          .core.readNamespace({ name: hostNamespace(ref) })
          .catch(() => undefined)) === undefined || undefined,
      120_000,
    );
  });
});
