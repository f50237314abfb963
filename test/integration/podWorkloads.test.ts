/**
 * The design's E2E 1 and 2 on the kubernetes runtime (ADR 14), as workloads.test.ts runs them on
 * the process runtime: a tenant whose control plane runs as pods on the real node is promoted that
 * very node (its own pods there do not make it busy); real containers run on it, kubectl exec
 * and logs reach them through clusterTree's pod, a pod's in-cluster client reaches the tenant's
 * API server pod, and a Service carries traffic by name, FQDN and ClusterIP through the tenant's
 * CoreDNS pod. Deleted, the tenant gives the node back and leaves none of its pods.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { VirtualCluster } from '../../src/api/virtualCluster.js';
import { tenantId } from '../../src/activities/index.js';
import { Promotion, hostNamespace } from '../../src/clustertree/naming.js';
import { CONTROL_PLANE_LABEL, ownerLabel } from '../../src/runtime/podWorkload.js';
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
} from '../support/harness.js';
import { runClientAndWeb, runningPod, serviceCarriesTraffic, testImages } from '../support/workloads.js';

const realNode = inject('realNode');
let operator: Operator;
let namespace: string;
let stateDir: string;
let vc: VirtualCluster;
let kubeconfig: string;

beforeAll(async () => {
  if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
  stateDir = await newStateDir();
  namespace = await createNamespace('podwl');
  operator = await testOperator({ stateDir, taskQueue: `podwl-${randomUUID()}`, namespace, pods: true });
  await createVirtualCluster(namespace, 'e2e', { promoteResources: { nodes: [realNode] } });
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
  if (vc && (await host().getVirtualCluster({ namespace, name: 'e2e' })))
    await deleteVirtualCluster(namespace, 'e2e').catch(() => undefined);
  await waitForGone(namespace, 'e2e', 240_000).catch(() => undefined);
  await operator?.stop({ stopTenants: true });
  await host()
    .core.deleteNamespace({ name: namespace })
    .catch(() => undefined);
}, 300_000);

const k = (...args: string[]) => kubectl(kubeconfig, ...args);

describe('workloads of a control plane in pods', () => {
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
    for (const p of controlPlane) expect(p.spec?.nodeName).toBe(realNode);
    // Promoted, not pending: the tenant's own pods on the node did not count as host workloads.
    expect(vc.status?.promoted?.pending ?? []).toEqual([]);
    expect(vc.status?.promoted?.nodes).toEqual([realNode]);
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
  });

  it('E2E 2: a Service answers by short name, FQDN and ClusterIP; scaling and deletion show', async () => {
    await serviceCarriesTraffic(kubeconfig, hostNamespace(refOf(vc)));
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
