/**
 * Workers on "different machines" (ADR 14): two worker processes with separate state directories
 * serve one task queue with the kubernetes runtime. The one running a tenant's provisioning step
 * is SIGKILLed; the other finishes, and the tenant has exactly one pod of each component and no
 * process on either worker's side.
 */
import { AppsV1Api } from '@kubernetes/client-node';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import { hostNamespace } from '../../src/clustertree/naming.js';
import { NodeNet } from '../../src/node/realNode.js';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import { CONTROL_PLANE_LABEL, ownerLabel } from '../../src/runtime/podWorkload.js';
import type { Operator } from '../../src/worker/operator.js';
import { progressQuery, workflowIdFor } from '../../src/workflows/definitions.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  eventually,
  host,
  hostKubeConfig,
  newStateDir,
  processesMentioning,
  spawnWorker,
  stopWorker,
  statusAs,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

const realNode = inject('realNode');
let watcherOnly: Operator;
let namespace: string;
let taskQueue: string;
const workers = new Map<string, { child: ChildProcess; stateDir: string }>();

/** A `kosmos-vc worker` of its own state directory, placing control planes as pods on the real node. */
async function startWorker(label: string): Promise<ChildProcess> {
  const stateDir = await newStateDir();
  const toolsImage = (await resolveBinaries()).node?.toolsImage;
  const child = spawnWorker(stateDir, label, taskQueue, {
    KOSMOS_VC_RUNTIME: 'kubernetes',
    // Every worker of a queue renders the pods alike (ADR 14).
    KOSMOS_VC_POD_NODE_SELECTOR: `kubernetes.io/hostname=${realNode}`,
    KOSMOS_VC_POD_TOLERATE_ALL: 'true',
    KOSMOS_VC_NODE_ADDRESS: inject('nodeAddress'),
    KOSMOS_VC_POD_CIDR: NodeNet.clusterCIDR,
    ...(toolsImage ? { KOSMOS_VC_HOSTS_IMAGE: toolsImage } : {}),
  });
  workers.set(label, { child, stateDir });
  return child;
}

beforeAll(async () => {
  if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
  taskQueue = `pod-workers-${randomUUID()}`;
  namespace = await createNamespace('podworkers');
  watcherOnly = await testOperator({ stateDir: await newStateDir(), taskQueue, namespace, worker: false });
});
afterAll(async () => {
  // A tenant a failure left behind is torn down while a worker still runs (its finalizer would
  // hold the namespace, and its pods the real node, for the tests after this one).
  await deleteVirtualCluster(namespace, 'shared').catch(() => undefined);
  await waitForGone(namespace, 'shared', 240_000).catch(() => undefined);
  await watcherOnly?.stop();
  for (const { child } of workers.values()) await stopWorker(child);
  await host()
    .core.deleteNamespace({ name: namespace })
    .catch(() => undefined);
}, 360_000);

describe('workers with separate state directories', () => {
  it('finish a tenant whose worker was SIGKILLed mid-provisioning, with one pod of each component', async () => {
    const [a, b] = await Promise.all([startWorker('a'), startWorker('b')]);
    const vc = await createVirtualCluster(namespace, 'shared', {
      promoteResources: { resources: { cpu: 1, memory: '2Gi' } },
    });
    const ref = { namespace, name: 'shared', uid: vc.metadata.uid };
    const handle = watcherOnly.client.workflow.getHandle(workflowIdFor(ref));
    // The API server's step under way, on one of the two: that one is killed.
    const holder = await eventually('the apiserver step under way on a worker', async () => {
      const p = await handle.query(progressQuery);
      if (p.steps.find((s) => s.name === 'startApiserver')?.state !== 'running') return undefined;
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      const identity = pending.find((x) => x.activityType?.name === 'startApiserver')?.lastWorkerIdentity;
      return identity ? identity : undefined;
    });
    const victim = [a, b].find((w) => holder.startsWith(`${w.pid}@`));
    expect(victim, `the step's worker (${holder}) is one of the two`).toBeDefined();
    victim!.kill('SIGKILL');
    await new Promise((r) => victim!.once('exit', r));

    const ready = await waitForPhase(namespace, 'shared', 'Ready', 300_000);
    const creds = credentialsOf(Buffer.from(ready.spec.kubeconfig!, 'base64').toString());
    expect(await statusAs(creds.server, creds.caPem, creds)).toBe(200);

    // Exactly one pod, one workload of each component; nothing runs as a process of either worker.
    const id = tenantId(ref);
    const selector = `${CONTROL_PLANE_LABEL}=${ownerLabel(id)}`;
    const hostNs = hostNamespace(ref);
    const pods = await eventually('one Running pod of each component', async () => {
      const now = (await host().core.listNamespacedPod({ namespace: hostNs, labelSelector: selector })).items;
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
    const apps = hostKubeConfig().makeApiClient(AppsV1Api);
    const workloads = [
      ...(await apps.listNamespacedDeployment({ namespace: hostNs, labelSelector: selector })).items,
      ...(await apps.listNamespacedStatefulSet({ namespace: hostNs, labelSelector: selector })).items,
    ];
    expect(workloads.map((w) => w.spec?.replicas)).toEqual([1, 1, 1, 1, 1, 1]);
    for (const { stateDir } of workers.values()) expect(processesMentioning(stateDir)).toEqual([]);

    await deleteVirtualCluster(namespace, 'shared');
    await waitForGone(namespace, 'shared', 240_000);
    expect((await host().core.listPodForAllNamespaces({ labelSelector: selector })).items).toEqual([]);
  }, 600_000);
});
