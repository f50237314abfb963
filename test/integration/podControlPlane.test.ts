/**
 * A VirtualCluster on the kubernetes runtime (ADR 14, KOSMOS_VC_RUNTIME=kubernetes): its etcd,
 * kube-apiserver, kube-controller-manager, kube-scheduler, clusterTree and CoreDNS are pods of
 * its host namespace on the real node (clusterTree's from the operator's image, reaching the host
 * API as its service account; CoreDNS answering through the tenant's DNS Service); exposed as a
 * NodePort, its published kubeconfig works from this machine through the node's address; the
 * tenant API server reaches clusterTree's kubelet endpoint by its Service's name; a certificate
 * renewal restarts the controller-manager's, scheduler's, clusterTree's and CoreDNS's pods with
 * new credentials; the apiserver's and etcd's pods come back when killed, data intact; deleting
 * the VirtualCluster leaves no pod, Service, Secret, claim or namespace of it.
 */
import { AppsV1Api, NetworkingV1Api } from '@kubernetes/client-node';
import { randomUUID } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { HOST_SA } from '../../src/activities/clusterTreeRbac.js';
import { tenantId } from '../../src/activities/index.js';
import { hostNamespace } from '../../src/clustertree/naming.js';
import { routeOf } from '../../src/node/network.js';
import { CONTROL_PLANE_LABEL, FILE_SOURCES, ownerLabel } from '../../src/runtime/podWorkload.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  deleteVirtualCluster,
  eventually,
  host,
  hostKubeConfig,
  kubectl,
  newStateDir,
  refOf,
  tenantKubeconfig,
  testOperator,
  waitForGone,
} from '../support/harness.js';

const realNode = inject('realNode');
let operator: Operator;
let namespace: string;
let stateDir: string;

beforeAll(async () => {
  if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
  stateDir = await newStateDir();
  namespace = await createNamespace('pods');
  operator = await testOperator({ stateDir, taskQueue: `pods-${randomUUID()}`, namespace, pods: true });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
  await host()
    .core.deleteNamespace({ name: namespace })
    .catch(() => undefined);
}, 120_000);

describe('a control plane in pods', () => {
  it('reaches Ready with its components as pods, survives a renewal and its pods being killed, and leaves nothing when deleted', async () => {
    // Leaves of six minutes, renewed 300 s before they expire: a renewal every minute.
    await createVirtualCluster(namespace, 'pods', {
      promoteResources: { resources: { cpu: 2, memory: '4Gi' } },
      certificates: { validity: '6m', renewBefore: '300s' },
      // Reached from outside the host on the node's address (the operator's) and a node port.
      apiServer: { expose: { type: 'NodePort' } },
    });
    const vc = await eventually(
      'tenant pods Ready',
      async () => {
        const v = await host().getVirtualCluster({ namespace, name: 'pods' });
        if (v?.status?.phase === 'Failed') throw new Error(v.status.message);
        return v?.status?.phase === 'Ready' ? v : undefined;
      },
      240_000,
    );
    const ref = refOf(vc);
    const hostNs = hostNamespace(ref);
    const id = tenantId(ref);
    const core = host().core;
    const controlPlanePods = async () =>
      (
        await core.listNamespacedPod({
          namespace: hostNs,
          labelSelector: `${CONTROL_PLANE_LABEL}=${ownerLabel(id)}`,
        })
      ).items.filter((p) => !p.metadata?.deletionTimestamp);

    // All six Running (a renewal may be restarting four of them: waited for).
    const pods = await eventually('six control-plane pods Running', async () => {
      const now = await controlPlanePods();
      return now.length === 6 && now.every((p) => p.status?.phase === 'Running') ? now : undefined;
    });
    expect(pods.map((p) => p.metadata!.labels!['app.kubernetes.io/name']).sort()).toEqual([
      'clustertree',
      'coredns',
      'etcd',
      'kube-apiserver',
      'kube-controller-manager',
      'kube-scheduler',
    ]);
    for (const p of pods) expect(p.spec?.nodeName).toBe(realNode);
    // None of them is a process of this machine.
    expect(await operator.runtime!.list(id)).toEqual([]);
    // clusterTree alone holds a credential of the host: its service account's token.
    const tree = pods.find((p) => p.metadata!.labels!['app.kubernetes.io/name'] === 'clustertree')!;
    expect(tree.spec?.serviceAccountName).toBe(HOST_SA);
    expect(tree.spec?.containers[0]?.image).toMatch(/^localhost\/kosmos-vc\/operator:/);
    for (const p of pods.filter((x) => x !== tree)) expect(p.spec?.automountServiceAccountToken).toBe(false);

    // The published kubeconfig names the node address and the node port of the API server's
    // Service (its ClusterIP, routed on this machine, is what pods use).
    const kubeconfig = await tenantKubeconfig(stateDir, vc);
    const server = (
      await kubectl(kubeconfig, 'config', 'view', '-o', 'jsonpath={.clusters[0].cluster.server}')
    ).trim();
    const svc = await core.readNamespacedService({ name: 'kosmos-apiserver', namespace: hostNs });
    expect(svc.spec?.type).toBe('NodePort');
    expect(server).toBe(`https://${inject('nodeAddress')}:${svc.spec!.ports![0]!.nodePort}`);
    expect(vc.status?.apiServerEndpoint).toBe(server);
    expect(await routeOf(svc.spec!.clusterIP!)).toMatch(/ dev kvc0 /);
    // Only the API server's pods are open to any source, on their port (a policy engine's rule).
    const exposed = await hostKubeConfig()
      .makeApiClient(NetworkingV1Api)
      .readNamespacedNetworkPolicy({ name: 'kosmos-vc-apiserver-exposed', namespace: hostNs });
    expect(exposed.spec?.podSelector?.matchLabels).toEqual({ 'app.kubernetes.io/name': 'kube-apiserver' });
    expect(exposed.spec?.ingress).toEqual([{ ports: [{ protocol: 'TCP', port: 6443 }] }]);
    await kubectl(kubeconfig, 'create', 'namespace', 'kept');
    await kubectl(kubeconfig, 'create', 'configmap', 'kept', '-n', 'kept', '--from-literal=a=1');
    // clusterTree serves the tenant through the API server in its pod: the promoted node is Ready.
    await eventually('a Ready tenant node', async () => {
      const out = await kubectl(
        kubeconfig,
        'get',
        'nodes',
        '-o',
        'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}',
      ).catch(() => '');
      return out.includes('True') ? true : undefined;
    });
    // The tenant's API server calls its nodes' kubelet endpoint: clusterTree's pod, by the name of
    // its Service (the node's InternalDNS address, a name its serving certificate carries).
    const node = (
      await kubectl(kubeconfig, 'get', 'nodes', '-o', 'jsonpath={.items[0].metadata.name}')
    ).trim();
    expect(
      await kubectl(
        kubeconfig,
        'get',
        'nodes',
        node,
        '-o',
        'jsonpath={.status.addresses[?(@.type=="InternalDNS")].address}',
      ),
    ).toBe(`clustertree.${hostNs}.svc`);
    expect(await kubectl(kubeconfig, 'get', '--raw', `/api/v1/nodes/${node}/proxy/healthz`)).toBe('ok\n');
    // The tenant's DNS Service (the ClusterIP its pods are given) answers from the tenant's API,
    // through the host's Service to CoreDNS's pod, port 53 over UDP.
    const dnsIP = (
      await kubectl(
        kubeconfig,
        'get',
        'service',
        'kube-dns',
        '-n',
        'kube-system',
        '-o',
        'jsonpath={.spec.clusterIP}',
      )
    ).trim();
    const apiIP = (
      await kubectl(
        kubeconfig,
        'get',
        'service',
        'kubernetes',
        '-n',
        'default',
        '-o',
        'jsonpath={.spec.clusterIP}',
      )
    ).trim();
    expect(await routeOf(dnsIP)).toMatch(/ dev kvc0 /);
    // The tenant's `kubernetes` has an endpoint, as in any cluster: the API server's Service
    // address on the API server's own port, which that Service carries too.
    expect(
      await kubectl(
        kubeconfig,
        'get',
        'endpointslices',
        '-n',
        'default',
        '-l',
        'kubernetes.io/service-name=kubernetes',
        '-o',
        'jsonpath={.items[0].endpoints[*].addresses[*]}:{.items[0].ports[0].port}',
      ),
    ).toBe(`${svc.spec!.clusterIP}:6443`);
    const resolver = new Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([dnsIP]);
    expect(
      await eventually('the tenant DNS to answer', () =>
        resolver.resolve4('kubernetes.default.svc.cluster.local').catch(() => undefined),
      ),
    ).toEqual([apiIP]);

    // A renewal restarts the controller-manager's, scheduler's, clusterTree's and CoreDNS's pods
    // (their client certificates are in kubeconfigs read once), with the kubeconfigs Secret
    // written anew.
    const kubeconfigsOf = async () =>
      JSON.stringify(
        (await core.readNamespacedSecret({ name: FILE_SOURCES.kubeconfigs.name, namespace: hostNs })).data,
      );
    // What there is now; then a renewal that issues after this moment (its leaves end six
    // minutes after it) must replace the two pods and the Secret.
    const kubeconfigsBefore = await kubeconfigsOf();
    const podsBefore = await controlPlanePods();
    // Taken after the reads: leaves that end six minutes after it were issued after them.
    const captureAt = Date.now();
    expect(
      Object.keys(
        (await core.readNamespacedSecret({ name: FILE_SOURCES.kubeconfigs.name, namespace: hostNs })).data ??
          {},
      ).sort(),
    ).toEqual(['controller-manager.conf', 'scheduler.conf']);
    const uidOf = (list: typeof pods, name: string) =>
      list.find((p) => p.metadata!.labels!['app.kubernetes.io/name'] === name)?.metadata?.uid;
    await eventually(
      'a renewal after the capture',
      async () => {
        const now = await host().getVirtualCluster({ namespace, name: 'pods' });
        const notAfter = Date.parse(now?.status?.certificates?.notAfter ?? '');
        return notAfter >= captureAt + 6 * 60_000 && now?.status?.phase === 'Ready' ? true : undefined;
      },
      150_000,
    );
    const renewed = await eventually(
      'new controller-manager, scheduler, clusterTree and CoreDNS pods, Ready',
      async () => {
        const now = await controlPlanePods();
        const fresh = ['kube-controller-manager', 'kube-scheduler', 'clustertree', 'coredns'].every((n) => {
          const p = now.find((x) => x.metadata!.labels!['app.kubernetes.io/name'] === n);
          return (
            p &&
            p.metadata!.uid !== uidOf(podsBefore, n) &&
            p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
          );
        });
        return fresh ? now : undefined;
      },
    );
    expect(uidOf(renewed, 'kube-scheduler')).not.toBe(uidOf(podsBefore, 'kube-scheduler'));
    expect(uidOf(renewed, 'clustertree')).not.toBe(uidOf(podsBefore, 'clustertree'));
    expect(uidOf(renewed, 'coredns')).not.toBe(uidOf(podsBefore, 'coredns'));
    expect(await kubeconfigsOf()).not.toBe(kubeconfigsBefore);
    // The renewed kubeconfig the operator published works.
    const republished = await tenantKubeconfig(
      stateDir,
      (await host().getVirtualCluster({ namespace, name: 'pods' }))!,
    );
    expect(
      await kubectl(republished, 'get', 'configmap', 'kept', '-n', 'kept', '-o', 'jsonpath={.data.a}'),
    ).toBe('1');

    // Kill the API server's pod and etcd's: they come back, with the data, the kubeconfig still good.
    const killed = (await controlPlanePods()).filter((p) =>
      ['etcd', 'kube-apiserver'].includes(p.metadata!.labels!['app.kubernetes.io/name']!),
    );
    expect(killed).toHaveLength(2);
    for (const p of killed)
      await core.deleteNamespacedPod({ name: p.metadata!.name!, namespace: hostNs, gracePeriodSeconds: 0 });
    const gone = new Set(killed.map((p) => p.metadata!.uid));
    const kept = await eventually(
      'the ConfigMap through a new API server pod',
      async () => {
        const now = await controlPlanePods();
        const back = ['etcd', 'kube-apiserver'].every((n) =>
          now.some((p) => p.metadata!.labels!['app.kubernetes.io/name'] === n && !gone.has(p.metadata!.uid)),
        );
        if (!back) return undefined;
        // Read again each time: a renewal meanwhile publishes a new one.
        const current = await tenantKubeconfig(
          stateDir,
          (await host().getVirtualCluster({ namespace, name: 'pods' }))!,
        );
        return kubectl(current, 'get', 'configmap', 'kept', '-n', 'kept', '-o', 'jsonpath={.data.a}').catch(
          () => undefined,
        );
      },
      180_000,
    );
    expect(kept).toBe('1');

    await deleteVirtualCluster(namespace, 'pods');
    await waitForGone(namespace, 'pods', 240_000);
    const apps = hostKubeConfig().makeApiClient(AppsV1Api);
    const selector = `${CONTROL_PLANE_LABEL}=${ownerLabel(id)}`;
    expect((await core.listPodForAllNamespaces({ labelSelector: selector })).items).toEqual([]);
    expect((await core.listServiceForAllNamespaces({ labelSelector: selector })).items).toEqual([]);
    expect((await core.listPersistentVolumeClaimForAllNamespaces({ labelSelector: selector })).items).toEqual(
      [],
    );
    expect((await apps.listDeploymentForAllNamespaces({ labelSelector: selector })).items).toEqual([]);
    expect((await apps.listStatefulSetForAllNamespaces({ labelSelector: selector })).items).toEqual([]);
    await eventually(
      'the host namespace gone',
      async () =>
        (await core.readNamespace({ name: hostNs }).catch(() => undefined)) === undefined ? true : undefined,
      120_000,
    );
    // The Secrets went with the namespace; etcd's volume goes with its claim (the provisioner's
    // helper pod removes the directory first).
    await eventually(
      "etcd's volume gone",
      async () =>
        (await core.listPersistentVolume()).items.some((pv) => pv.spec?.claimRef?.namespace === hostNs)
          ? undefined
          : true,
      120_000,
    );
  }, 600_000);
});
