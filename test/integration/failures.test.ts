/**
 * Bad input and permanent failures: the CRD rejects malformed specs; a spec the CRD accepts
 * but the control plane cannot serve fails with a reason, leaves nothing behind and does not
 * touch a healthy tenant; deleting in the middle of provisioning leaves nothing either.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from '../../src/api/virtualCluster.js';
import { hostNamespace } from '../../src/clustertree/naming.js';
import type { Operator } from '../../src/worker/operator.js';
import { progressQuery, workflowIdFor } from '../../src/workflows/definitions.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  eventually,
  host,
  newStateDir,
  pathExists,
  processesMentioning,
  refOf,
  statusAs,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';
import { specExamples } from '../support/specExamples.js';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';

let operator: Operator;
let namespace: string;
let stateDir: string;

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('failures');
  // (Node ports are the host admin's to give: this one gives none.)
  operator = await testOperator({
    stateDir,
    taskQueue: `failures-${randomUUID()}`,
    namespace,
    exposeTypes: ['LoadBalancer'],
  });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
});

async function leftovers(uid: string, name: string) {
  const id = tenantId({ namespace, name, uid });
  const ports = JSON.parse(await readFile(join(stateDir, 'ports.json'), 'utf8').catch(() => '{}')) as Record<
    string,
    number[]
  >;
  return {
    processes: processesMentioning(join(stateDir, 'tenants', id)),
    dir: pathExists(join(stateDir, 'tenants', id)),
    runtimeRecords: pathExists(join(stateDir, 'runtime', id)),
    clusterTreeRegistered: pathExists(join(stateDir, 'clustertree-tenants', `${id}.json`)),
    ports: ports[id] ?? [],
    secret: (await host().getSecret(namespace, `${name}-kubeconfig`)) !== undefined,
  };
}
const nothing = {
  processes: [],
  dir: false,
  runtimeRecords: false,
  clusterTreeRegistered: false,
  ports: [],
  secret: false,
};

describe('bad input', () => {
  it.each(specExamples)(
    'the API server agrees with the schemas: $title (valid=$valid)',
    async ({ name, spec, valid }) => {
      const body = {
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name: name ?? 'example', namespace },
        spec,
      };
      const attempt = host().custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace,
        body,
        dryRun: 'All',
      });
      if (valid) await expect(attempt).resolves.toBeTruthy();
      else await expect(attempt).rejects.toMatchObject({ code: 422 });
    },
  );

  it('fails a spec the control plane cannot serve with a clear reason, cleans up, and leaves other tenants alone', async () => {
    await createVirtualCluster(namespace, 'healthy');
    const healthy = await waitForPhase(namespace, 'healthy', 'Ready');
    const creds = credentialsOf(Buffer.from(healthy.spec.kubeconfig!, 'base64').toString());

    // 10.96.0.0/30 is a well-formed network, but kube-apiserver needs at least 8 service IPs.
    // Where tenants' pods run on the host (a node address), it is refused first, before
    // anything is made: it does not hold the host's service range, as a tenant's must (ADR 7).
    const bad = await createVirtualCluster(namespace, 'too-small', { serviceCIDR: '10.96.0.0/30' });
    const failed = await waitForPhase(namespace, 'too-small', 'Failed');
    if (inject('nodeAddress')) {
      expect(failed.status?.reason).toBe('InvalidSpec');
      expect(failed.status?.message).toMatch(
        /spec\.serviceCIDR 10\.96\.0\.0\/30 .* does not hold the host's service range 10\.96\.0\.0\/12:/,
      );
    } else {
      expect(failed.status?.reason).toBe('ComponentExited');
      expect(failed.status?.message).toMatch(/kube-apiserver exited.*at least 8 IP addresses/);
      const apiserverCondition = failed.status?.conditions?.find((c) => c.type === 'APIServerReady');
      expect(apiserverCondition).toMatchObject({ status: 'False', reason: 'ComponentExited' });
    }
    expect(failed.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('False');
    expect(await leftovers(bad.metadata.uid, 'too-small')).toEqual(nothing);

    // The healthy tenant still serves.
    expect(await statusAs(creds.server, creds.caPem, creds)).toBe(200);
    expect((await host().getVirtualCluster({ namespace, name: 'healthy' }))?.status?.phase).toBe('Ready');

    // A failed tenant can still be deleted.
    await deleteVirtualCluster(namespace, 'too-small');
    await waitForGone(namespace, 'too-small');
  });

  it('refuses an exposure of the API server the operator does not make, before making anything', async () => {
    const bad = await createVirtualCluster(namespace, 'node-port', {
      apiServer: { expose: { type: 'NodePort' } },
    });
    const failed = await waitForPhase(namespace, 'node-port', 'Failed');
    expect(failed.status?.reason).toBe('InvalidSpec');
    expect(failed.status?.message).toMatch(
      /spec\.apiServer\.expose NodePort is not allowed by this operator \(KOSMOS_VC_EXPOSE_TYPES=LoadBalancer\)/,
    );
    expect(await leftovers(bad.metadata.uid, 'node-port')).toEqual(nothing);
    // Not even its host namespace (where an exposed API server's Service would be).
    expect(
      await host()
        .core.readNamespace({ name: hostNamespace(refOf(bad)) })
        .catch(() => undefined),
    ).toBeUndefined();
    await deleteVirtualCluster(namespace, 'node-port');
    await waitForGone(namespace, 'node-port');
  });
});

describe('delete during provisioning', () => {
  it('stops provisioning, removes everything, then lets the object go', async () => {
    const vc = await createVirtualCluster(namespace, 'short-lived');
    const handle = operator.client.workflow.getHandle(
      workflowIdFor({ namespace, name: 'short-lived', uid: vc.metadata.uid }),
    );
    await eventually('etcd to be started', async () => {
      const p = await handle.query(progressQuery);
      return p.steps.find((s) => s.name === 'startEtcd')?.state !== 'pending';
    });
    await deleteVirtualCluster(namespace, 'short-lived');
    await waitForGone(namespace, 'short-lived');
    const progress = await handle.query(progressQuery);
    expect(progress.phase).not.toBe('Ready');
    expect(await leftovers(vc.metadata.uid, 'short-lived')).toEqual(nothing);
  });
});

describe('a step that fails permanently late in provisioning', () => {
  it('undoes every earlier step in reverse and reports Failed with the reason', async () => {
    // A worker whose kube-scheduler binary is broken, each component a process of its own: etcd,
    // the apiserver and the controller-manager start, the scheduler cannot.
    const brokenNs = await createNamespace('broken');
    const brokenState = await newStateDir();
    const broken = await testOperator({
      stateDir: brokenState,
      taskQueue: `broken-${randomUUID()}`,
      namespace: brokenNs,
      binaries: { kubeScheduler: '/bin/false' },
      oneProcess: false,
    });
    try {
      const vc = await createVirtualCluster(brokenNs, 'no-scheduler');
      const failed = await waitForPhase(brokenNs, 'no-scheduler', 'Failed');
      expect(failed.status?.reason).toBe('ComponentExited');
      expect(failed.status?.message).toMatch(/^kube-scheduler exited with code 1 before it was ready/);
      const conditions = Object.fromEntries(
        (failed.status?.conditions ?? []).map((c) => [c.type, `${c.status}/${c.reason}`]),
      );
      expect(conditions).toMatchObject({
        SchedulerReady: 'False/ComponentExited',
        ControllerManagerReady: 'False/RolledBack',
        EtcdReady: 'False/RolledBack',
        Ready: 'False/ComponentExited',
      });
      const id = tenantId({ namespace: brokenNs, name: 'no-scheduler', uid: vc.metadata.uid });
      expect(processesMentioning(join(brokenState, 'tenants', id))).toEqual([]);
      expect(pathExists(join(brokenState, 'tenants', id))).toBe(false);
      expect(pathExists(join(brokenState, 'runtime', id))).toBe(false);
      expect(pathExists(join(brokenState, 'clustertree-tenants', `${id}.json`))).toBe(false);
      const progress = await broken.client.workflow
        .getHandle(workflowIdFor({ namespace: brokenNs, name: 'no-scheduler', uid: vc.metadata.uid }))
        .query(progressQuery);
      expect(progress.steps.map((s) => `${s.name}:${s.state}`)).toEqual([
        'allocate:undone',
        'issueCertificates:undone',
        'startEtcd:undone',
        'startApiserver:undone',
        'startControllerManager:undone',
        'startScheduler:failed',
        'publishKubeconfig:pending',
        'deployClusterTree:pending',
        'promoteResources:pending',
      ]);
      await deleteVirtualCluster(brokenNs, 'no-scheduler');
      await waitForGone(brokenNs, 'no-scheduler');
    } finally {
      await broken.stop({ stopTenants: true });
    }
  });

  it('leaves a tenant that fails after publishing its kubeconfig Failed: the generations of its own writes retry nothing', async () => {
    // clusterTree (a process per tenant here) exits at once: deployClusterTree fails for good
    // after publishKubeconfig wrote spec.kubeconfig, and the undo removes it again. Each write is
    // a generation the watcher delivers with the same spec; before the retry-on-spec-change
    // patch each provisioned the tenant again, round after round.
    const brokenNs = await createNamespace('no-tree');
    const brokenState = await newStateDir();
    const exits = join(brokenState, 'exits.mjs');
    await writeFile(exits, 'process.exit(3);\n');
    const broken = await testOperator({
      stateDir: brokenState,
      taskQueue: `no-tree-${randomUUID()}`,
      namespace: brokenNs,
      binaries: { clusterTree: exits },
      sharedClusterTree: false,
    });
    try {
      const vc = await createVirtualCluster(brokenNs, 'no-tree');
      const failed = await waitForPhase(brokenNs, 'no-tree', 'Failed');
      expect(failed.status?.reason).toBe('ComponentExited');
      const conditions = Object.fromEntries(
        (failed.status?.conditions ?? []).map((c) => [c.type, `${c.status}/${c.reason}`]),
      );
      expect(conditions).toMatchObject({
        ClusterTreeReady: 'False/ComponentExited',
        KubeconfigPublished: 'False/RolledBack',
      });
      // Published and unpublished: two generations past the first, both observed.
      const read = async () => (await host().getVirtualCluster({ namespace: brokenNs, name: 'no-tree' }))!;
      const settled = await eventually('the last generation observed', async () => {
        const now = await read();
        const generation = now.metadata.generation ?? 0;
        return generation >= 3 && now.status?.observedGeneration === generation && now;
      });
      expect(settled.status?.phase).toBe('Failed');
      // Time for a round: the watcher relists every 5 s, a provision takes seconds.
      await new Promise((r) => setTimeout(r, 8_000));
      const later = await read();
      expect(later.metadata.generation).toBe(settled.metadata.generation);
      expect(later.status?.phase).toBe('Failed');
      const handle = broken.client.workflow.getHandle(
        workflowIdFor({ namespace: brokenNs, name: 'no-tree', uid: vc.metadata.uid }),
      );
      expect((await handle.query(progressQuery)).generation).toBe(later.metadata.generation);
      await deleteVirtualCluster(brokenNs, 'no-tree');
      await waitForGone(brokenNs, 'no-tree');
    } finally {
      await broken.stop({ stopTenants: true });
    }
  });

  it("ends the API server's start begun beside an etcd that cannot start, and reports etcd's failure", async () => {
    // The default: etcd and one process of kube-control-plane, started at once (ADR 12, decision
    // 22). etcd exits at once; the API server would wait for it 20 s, twice.
    const brokenNs = await createNamespace('no-etcd');
    const brokenState = await newStateDir();
    const broken = await testOperator({
      stateDir: brokenState,
      taskQueue: `no-etcd-${randomUUID()}`,
      namespace: brokenNs,
      binaries: { etcd: '/bin/false' },
    });
    try {
      const t0 = Date.now();
      const vc = await createVirtualCluster(brokenNs, 'no-etcd');
      const failed = await waitForPhase(brokenNs, 'no-etcd', 'Failed');
      // Before the API server's own wait could have ended (two exits, 20 s each).
      expect(Date.now() - t0).toBeLessThan(30_000);
      expect(failed.status?.reason).toBe('ComponentExited');
      expect(failed.status?.message).toMatch(/^etcd exited with code 1 before it was ready/);
      const conditions = Object.fromEntries(
        (failed.status?.conditions ?? []).map((c) => [c.type, `${c.status}/${c.reason}`]),
      );
      expect(conditions).toMatchObject({
        EtcdReady: 'False/ComponentExited',
        APIServerReady: 'False/RolledBack',
        Ready: 'False/ComponentExited',
      });
      const id = tenantId({ namespace: brokenNs, name: 'no-etcd', uid: vc.metadata.uid });
      expect(processesMentioning(join(brokenState, 'tenants', id))).toEqual([]);
      expect(pathExists(join(brokenState, 'runtime', id))).toBe(false);
      await deleteVirtualCluster(brokenNs, 'no-etcd');
      await waitForGone(brokenNs, 'no-etcd');
    } finally {
      await broken.stop({ stopTenants: true });
    }
  });
});
