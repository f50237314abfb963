/**
 * The VirtualCluster workflow with stubbed activities on a real Temporal dev server: step
 * order, compensation order, teardown, spec changes, deletion mid-provisioning.
 */
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  STEP_NAMES,
  checkCertificatesSignal,
  deleteRequestedSignal,
  progressQuery,
  retrySignal,
  specChangedSignal,
  workflowIdFor,
  type VirtualClusterWorkflowInput,
} from '../../src/workflows/definitions.js';
import { certificatePolicy } from '../../src/workflows/certificates.js';
import { OperatorMetrics, serveMetrics } from '../../src/metrics/operator.js';
import { installTemporalRuntime, workflowBundle } from '../../src/worker/operator.js';
import type { StatusReport } from '../../src/activities/types.js';
import { hold, stubActivities, type StubControl } from '../support/stubActivities.js';

let env: TestWorkflowEnvironment;

beforeAll(async () => {
  installTemporalRuntime();
  env = await TestWorkflowEnvironment.createFromExistingServer({ address: inject('temporalAddress') });
});
afterAll(async () => {
  await env?.teardown();
});

const ALL_STEPS: string[] = [...STEP_NAMES];
/** What teardown calls: every undo, newest step first. */
const TEARDOWN = [
  'demoteAll',
  'removeClusterTree',
  'unpublishKubeconfig',
  'stop:kube-scheduler',
  'stop:kube-controller-manager',
  'stop:kube-apiserver',
  'stop:etcd',
  'release',
];

async function withWorker<T>(
  control: StubControl,
  fn: (taskQueue: string) => Promise<T>,
  metrics?: OperatorMetrics,
): Promise<T> {
  const taskQueue = `wf-test-${randomUUID()}`;
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    // Heartbeats (and so cancellations, e.g. of the wait for a request) get through within 2 s.
    maxHeartbeatThrottleInterval: '2 seconds',
    activities: stubActivities(control),
    ...(metrics ? { interceptors: { activity: [metrics.interceptor()] } } : {}),
  });
  return worker.runUntil(fn(taskQueue));
}

function input(): VirtualClusterWorkflowInput {
  return {
    ref: { namespace: 'ns', name: `vc-${randomUUID().slice(0, 8)}`, uid: randomUUID() },
    spec: { serviceCIDR: '10.96.0.0/12' },
    generation: 1,
    searchAttributes: false,
  };
}

const startWorkflow = (taskQueue: string, args: VirtualClusterWorkflowInput) =>
  env.client.workflow.start('virtualClusterWorkflow', {
    workflowId: workflowIdFor(args.ref),
    taskQueue,
    args: [args],
  });

const newControl = (): StubControl => ({ calls: [], statuses: [], holds: new Map() });

/**
 * Writes the history of the workflow's first run (whether or not it continued as new) to the
 * file the environment variable names, if it names one: a replay fixture (test/unit/replay.test.ts).
 */
async function recordFirstRun(
  handle: { workflowId: string; firstExecutionRunId: string },
  variable: string,
): Promise<void> {
  const file = process.env[variable];
  if (!file) return;
  const first = env.client.workflow.getHandle(handle.workflowId, handle.firstExecutionRunId);
  await writeFile(file, historyToJSON(await first.fetchHistory()));
}

/** A Ready tenant's resize to `resized` fails (generation 2), up to its ResizeFailed status. */
async function failResize(
  handle: {
    signal: (
      s: typeof specChangedSignal,
      change: { spec: VirtualClusterWorkflowInput['spec']; generation: number },
    ) => Promise<void>;
  },
  control: StubControl,
  resized: VirtualClusterWorkflowInput['spec'],
): Promise<void> {
  control.failAt = 'promoteResources';
  await handle.signal(specChangedSignal, { spec: resized, generation: 2 });
  await until(() => control.statuses.at(-1)?.reason === 'ResizeFailed', 'ResizeFailed');
}

/**
 * The calls with etcd's and the API server's steps in the steps' order: they start at once
 * where control planes are processes (ADR 12, decision 22), so which the worker called first
 * is not fixed.
 */
function inStepOrder(calls: string[]): string[] {
  const out = [...calls];
  const i = out.indexOf('startApiserver');
  if (i >= 0 && out[i + 1] === 'startEtcd') out.splice(i, 2, 'startEtcd', 'startApiserver');
  return out;
}

async function until(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('virtualClusterWorkflow', () => {
  it('runs the steps in order, reports Initialized then Ready, and tears down in reverse on delete', async () => {
    const control = newControl();
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.some((s) => s.phase === 'Ready'), 'Ready');
      expect(inStepOrder(control.calls)).toEqual(ALL_STEPS);
      // The control plane serves (Initialized) before clusterTree is deployed.
      const phases = control.statuses.map((s) => s.phase);
      expect(phases.indexOf('Initialized')).toBeGreaterThan(-1);
      expect(phases.indexOf('Initialized')).toBeLessThan(phases.indexOf('Ready'));
      const progress = await handle.query(progressQuery);
      expect(progress.phase).toBe('Ready');
      expect(progress.steps.every((s) => s.state === 'done')).toBe(true);
      const last = control.statuses.at(-1)!;
      expect(last.conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
      expect(last.conditions.map((c) => c.type)).toEqual(
        expect.arrayContaining(['EtcdReady', 'APIServerReady', 'KubeconfigPublished']),
      );
      expect(last.kubeconfigSecretRef).toEqual({ name: `${args.ref.name}-kubeconfig`, key: 'kubeconfig' });

      await handle.signal(deleteRequestedSignal);
      expect(await handle.result()).toEqual({ tornDown: true, tenantId: 'ns-vc-00000000' });
      expect(control.calls.slice(ALL_STEPS.length)).toEqual(TEARDOWN);
      expect(control.statuses.some((s) => s.phase === 'Deleting')).toBe(true);
      if (process.env.KVC_RECORD_HISTORY) {
        const history = await handle.fetchHistory();
        await writeFile(process.env.KVC_RECORD_HISTORY, historyToJSON(history));
      }
    });
  });

  it('names the kubeconfig Secret in status once it is written, not while it is being written or removed', async () => {
    const control = newControl();
    const publishing = hold(control, 'publishKubeconfig');
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await publishing.reached;
      const during = () => control.statuses.find((s) => s.message.endsWith(': publishKubeconfig'));
      await until(() => during() !== undefined, 'the status of the publishing step');
      expect(during()?.kubeconfigSecretRef).toBeNull();
      publishing.release();
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      expect(control.statuses.at(-1)?.kubeconfigSecretRef).not.toBeNull();
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      // Nor once it is being removed.
      const deleting = control.statuses.filter((s) => s.phase === 'Deleting');
      expect(deleting.length).toBeGreaterThan(0);
      expect(deleting.every((s) => s.kubeconfigSecretRef === null)).toBe(true);
    });
  });

  it('undoes the failed step and every earlier one, newest first, then reports Failed', async () => {
    const control: StubControl = { ...newControl(), failAt: 'startApiserver' };
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.some((s) => s.phase === 'Failed'), 'Failed');
      expect(inStepOrder(control.calls)).toEqual([
        'allocate',
        'issueCertificates',
        'startEtcd',
        'startApiserver',
        'stop:kube-apiserver',
        'stop:etcd',
        'release',
      ]);
      const failed = control.statuses.at(-1)!;
      expect(failed.reason).toBe('ComponentExited');
      expect(failed.message).toContain('startApiserver failed on purpose');
      expect(failed.conditions.find((c) => c.type === 'Ready')?.status).toBe('False');

      // A retry after the cause is gone provisions from scratch.
      control.failAt = undefined;
      control.calls.length = 0;
      await handle.signal(retrySignal);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready after retry');
      expect(inStepOrder(control.calls)).toEqual(ALL_STEPS);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('starts etcd and the API server at once where control planes are processes, one after the other in pods', async () => {
    const control = newControl();
    const etcd = hold(control, 'startEtcd');
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await etcd.reached;
      // The API server's step runs while etcd's is still held.
      await until(() => control.calls.includes('startApiserver'), "the API server's step beside etcd's");
      // The controller-manager's step waits for both.
      await new Promise((r) => setTimeout(r, 500));
      expect(control.calls).not.toContain('startControllerManager');
      etcd.release();
      await until(() => control.statuses.some((s) => s.phase === 'Ready'), 'Ready');
      expect(inStepOrder(control.calls)).toEqual(ALL_STEPS);
      const ready = control.statuses.at(-1)!;
      for (const type of ['EtcdReady', 'APIServerReady'])
        expect(ready.conditions.find((c) => c.type === type)?.status).toBe('True');
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });

    const pods: StubControl = { ...newControl(), inPods: true };
    const podEtcd = hold(pods, 'startEtcd');
    await withWorker(pods, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await podEtcd.reached;
      // An API server pod that starts before its etcd serves crash-loops into the kubelet's backoff.
      await new Promise((r) => setTimeout(r, 1_000));
      expect(pods.calls).toEqual(['allocate', 'issueCertificates', 'startEtcd']);
      podEtcd.release();
      await until(() => pods.statuses.some((s) => s.phase === 'Ready'), 'Ready in pods');
      expect(pods.calls).toEqual(ALL_STEPS);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('writes only the newest status of a phase waiting behind the one being written, and every phase', async () => {
    // Writes slower than the steps: several steps end during each.
    const control: StubControl = { ...newControl(), statusWriteMs: 400 };
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await until(() => control.statuses.some((s) => s.phase === 'Ready'), 'Ready');
      const phases = control.statuses.map((s) => s.phase);
      // One write per step and phase would be 11 (Preparing with each of the 9 steps' progress,
      // Initialized, then Ready); each phase is written, in order.
      expect(phases.length).toBeLessThan(STEP_NAMES.length);
      expect(phases.filter((p, i) => p !== phases[i - 1])).toEqual(['Preparing', 'Initialized', 'Ready']);
      expect(control.statuses.at(-1)!.conditions.every((c) => c.status === 'True')).toBe(true);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it("cancels the API server's step when etcd's fails beside it, undoes both once it has ended, and reports etcd's failure", async () => {
    const control: StubControl = { ...newControl(), failAt: 'startEtcd' };
    const api = hold(control, 'startApiserver');
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await api.reached;
      await until(() => control.statuses.some((s) => s.phase === 'Failed'), 'Failed');
      // The held step was cancelled (it never got the release), and nothing was undone before
      // it had ended.
      expect(inStepOrder(control.calls)).toEqual([
        'allocate',
        'issueCertificates',
        'startEtcd',
        'startApiserver',
        'cancelled:startApiserver',
        'stop:kube-apiserver',
        'stop:etcd',
        'release',
      ]);
      const failed = control.statuses.at(-1)!;
      expect(failed.reason).toBe('ComponentExited');
      expect(failed.message).toContain('startEtcd failed on purpose');
      const conditions = Object.fromEntries(
        failed.conditions.map((c) => [c.type, `${c.status}/${c.reason}`]),
      );
      expect(conditions).toMatchObject({
        EtcdReady: 'False/ComponentExited',
        APIServerReady: 'False/RolledBack',
        Ready: 'False/ComponentExited',
      });
      const progress = await handle.query(progressQuery);
      expect(
        progress.steps.filter((st) => st.name.startsWith('start')).map((st) => `${st.name}:${st.state}`),
      ).toEqual([
        'startEtcd:failed',
        'startApiserver:undone',
        'startControllerManager:pending',
        'startScheduler:pending',
      ]);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it("compensates when the API server's step fails first while a status write waits behind a slow one", async () => {
    // The steps' progress waits behind the certificates' slow write, in etcd's step's scope; the
    // API server's failure cancels that scope, and Compensating joins the same waiting write.
    const control: StubControl = { ...newControl(), failAt: 'startApiserver', statusWriteMs: 1_000 };
    const certificates = hold(control, 'issueCertificates');
    hold(control, 'startEtcd'); // still running when the API server's step fails: cancelled
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await certificates.reached;
      // The first write is done and the next (the certificates' progress) has begun: the two
      // steps' progress then waits behind it in a write of its own, made in etcd's step's scope.
      await until(() => control.statuses.length >= 1, 'the first status written');
      certificates.release();
      await until(() => control.statuses.some((s) => s.phase === 'Failed'), 'Failed', 30_000);
      expect(inStepOrder(control.calls)).toEqual([
        'allocate',
        'issueCertificates',
        'startEtcd',
        'startApiserver',
        'cancelled:startEtcd',
        'stop:kube-apiserver',
        'stop:etcd',
        'release',
      ]);
      expect(control.statuses.at(-1)!.message).toContain('startApiserver failed on purpose');
      expect(control.statuses.some((s) => s.reason === 'Compensating')).toBe(true);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('times every activity by outcome and counts compensations, served on /metrics', async () => {
    const metrics = new OperatorMetrics();
    const control: StubControl = { ...newControl(), failAt: 'startApiserver' };
    const args = input();
    await withWorker(
      control,
      async (taskQueue) => {
        const handle = await startWorkflow(taskQueue, args);
        await until(() => control.statuses.some((s) => s.phase === 'Failed'), 'Failed');
        await handle.signal(deleteRequestedSignal);
        await handle.result();
      },
      metrics,
    );
    const served = await serveMetrics(metrics.registry, 0);
    try {
      const res = await fetch(served.url);
      expect(res.status).toBe(200);
      const text = await res.text();
      const count = (activity: string, outcome: string) =>
        Number(
          new RegExp(
            `^kosmos_vc_activity_duration_seconds_count\\{activity="${activity}",outcome="${outcome}"\\} (\\d+)$`,
            'm',
          ).exec(text)?.[1] ?? 0,
        );
      expect(count('allocate', 'success')).toBe(1);
      expect(count('startEtcd', 'success')).toBe(1);
      // startApiserver fails on purpose (non-retryable in the stub): one failed execution.
      expect(count('startApiserver', 'failure')).toBeGreaterThanOrEqual(1);
      expect(count('startApiserver', 'success')).toBe(0);
      expect(count('release', 'success')).toBeGreaterThanOrEqual(1);
      expect(count('reportStatus', 'success')).toBeGreaterThan(2);
      expect(text).toMatch(/^kosmos_vc_compensations_total 1$/m);
      expect(text).toMatch(/^kosmos_vc_operator_process_resident_memory_bytes \d+/m);
      expect((await fetch(served.url.replace('/metrics', '/other'))).status).toBe(404);
    } finally {
      await served.close();
    }
  });

  it('records a spec change, and a spec change after Failed provisions again', async () => {
    const control: StubControl = { ...newControl(), failAt: 'startEtcd' };
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Failed', 'Failed');
      control.failAt = undefined;
      await handle.signal(specChangedSignal, { spec: { serviceCIDR: '10.100.0.0/16' }, generation: 2 });
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      expect(control.statuses.at(-1)?.observedGeneration).toBe(2);

      // An older generation arriving late changes nothing.
      const count = control.statuses.length;
      await handle.signal(specChangedSignal, { spec: { serviceCIDR: '10.96.0.0/12' }, generation: 1 });
      await handle.signal(specChangedSignal, {
        spec: { serviceCIDR: '10.100.0.0/16', certSANs: ['a.example.com'] },
        generation: 3,
      });
      await until(() => control.statuses.at(-1)?.observedGeneration === 3, 'observedGeneration 3');
      expect(control.statuses.slice(count).every((s) => s.observedGeneration !== 1)).toBe(true);
      expect((await handle.query(progressQuery)).generation).toBe(3);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('does not provision a Failed tenant again for a generation that changes nothing in its spec', async () => {
    // What the watcher sends after the operator's own spec.kubeconfig writes (publish, then
    // unpublish while undoing): the same spec, a newer generation.
    const control: StubControl = { ...newControl(), failAt: 'deployClusterTree' };
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Failed', 'Failed');
      // The kubeconfig was published, and is named no more once it is being undone.
      const undoing = control.statuses.filter((s) => s.reason === 'Compensating');
      expect(undoing.length).toBeGreaterThan(0);
      expect(undoing.every((s) => s.kubeconfigSecretRef === null)).toBe(true);
      control.calls.length = 0;
      await handle.signal(specChangedSignal, { spec: args.spec, generation: 2 });
      await until(() => control.statuses.at(-1)?.observedGeneration === 2, 'observedGeneration 2');
      expect(control.statuses.at(-1)?.phase).toBe('Failed');
      expect(control.calls).toEqual([]);

      // A change of the spec does.
      control.failAt = undefined;
      await handle.signal(specChangedSignal, {
        spec: { ...args.spec, certSANs: ['a.example.com'] },
        generation: 3,
      });
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      expect(control.calls[0]).toBe('allocate');
      expect(control.statuses.at(-1)?.observedGeneration).toBe(3);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      // Also the replay fixture virtualcluster-failed-same-spec (KVC_RECORD_FAILED_HISTORY=<file>).
      if (process.env.KVC_RECORD_FAILED_HISTORY)
        await writeFile(process.env.KVC_RECORD_FAILED_HISTORY, historyToJSON(await handle.fetchHistory()));
    });
  });

  it("takes a generation that only adds the CRD's defaults to a spec from before them as no change", async () => {
    // A workflow started before spec.podSecurity had its default holds its spec without it; the
    // API server serves the same object with it (and the watcher may order keys otherwise).
    const served = (spec: VirtualClusterWorkflowInput['spec']): VirtualClusterWorkflowInput['spec'] => ({
      ...(Object.fromEntries(Object.entries(spec).reverse()) as VirtualClusterWorkflowInput['spec']),
      podSecurity: 'baseline',
    });
    const last = (c: StubControl) => c.statuses.at(-1);

    // A Failed tenant stays Failed.
    const failed: StubControl = { ...newControl(), failAt: 'startEtcd' };
    const args = { ...input(), spec: { serviceCIDR: '10.96.0.0/12', certSANs: ['a.example.com'] } };
    await withWorker(failed, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => last(failed)?.phase === 'Failed', 'Failed');
      failed.calls.length = 0;
      await handle.signal(specChangedSignal, { spec: served(args.spec), generation: 2 });
      await until(() => last(failed)?.observedGeneration === 2, 'generation 2 recorded');
      expect(last(failed)?.phase).toBe('Failed');
      expect(failed.calls).toEqual([]);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      // Also the replay fixture virtualcluster-failed-defaults (KVC_RECORD_DEFAULTS_HISTORY=<file>).
      await recordFirstRun(handle, 'KVC_RECORD_DEFAULTS_HISTORY');
    });

    // A tenant asleep for idleness stays asleep, listening: a run continued as new while asleep,
    // so that its history holds both the generation and what follows it.
    const idle = newControl();
    const request = hold(idle, 'awaitTenantRequest');
    const year = 365 * 24 * 3_600_000;
    const sleepy: VirtualClusterWorkflowInput = {
      ...input(),
      spec: { serviceCIDR: '10.96.0.0/12', autoSleep: { idleAfter: '2s' } },
      carried: {
        phase: 'Sleeping',
        reason: 'Idle',
        message: 'no request for 2s',
        started: [...STEP_NAMES],
        conditions: [],
        allocation: {
          id: 'ns-vc-00000000',
          dir: '/nonexistent/ns-vc-00000000',
          address: '127.0.0.1',
          ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
          serviceCIDR: '10.96.0.0/12',
        },
        certificates: {
          notAfter: new Date(Date.now() + 2 * year).toISOString(),
          renewAt: new Date(Date.now() + year).toISOString(),
          caNotAfter: new Date(Date.now() + 10 * year).toISOString(),
          caFingerprint: 'ca-0',
          caRotation: 0,
        },
        appliedCertificatePolicy: certificatePolicy({ serviceCIDR: '10.96.0.0/12' }),
        endpoint: 'https://127.0.0.1:3',
        idleAsleep: true,
        lastActiveAt: new Date().toISOString(),
      },
    };
    await withWorker(idle, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, sleepy);
      await request.reached; // listening
      const next = hold(idle, 'awaitTenantRequest');
      idle.calls.length = 0;
      await handle.signal(specChangedSignal, { spec: served(sleepy.spec), generation: 2 });
      await until(() => last(idle)?.observedGeneration === 2, 'generation 2 recorded');
      await next.reached; // listening again
      expect(last(idle)).toMatchObject({ phase: 'Sleeping', reason: 'Idle' });
      expect(idle.calls).toEqual(['awaitTenantRequest:cancelled', 'awaitTenantRequest']);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      // Also the replay fixture virtualcluster-idle-defaults (KVC_RECORD_IDLE_DEFAULTS_HISTORY=<file>).
      if (process.env.KVC_RECORD_IDLE_DEFAULTS_HISTORY)
        await writeFile(
          process.env.KVC_RECORD_IDLE_DEFAULTS_HISTORY,
          historyToJSON(await handle.fetchHistory()),
        );
    });
  });

  it('sleeps on spec.sleep (every process stopped, nothing undone) and wakes on its same data', async () => {
    const control = newControl();
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      control.calls.length = 0;
      await handle.signal(specChangedSignal, { spec: { ...args.spec, sleep: true }, generation: 2 });
      await until(() => control.statuses.at(-1)?.reason === 'Asleep', 'Sleeping');
      // One stop of everything; no undo (release, removeClusterTree, unpublish) runs.
      expect(control.calls).toEqual(['sleepTenant']);
      const asleep = control.statuses.at(-1)!;
      expect(asleep.reason).toBe('Asleep');
      expect(asleep.observedGeneration).toBe(2);
      const cond = (s: StatusReport, type: string) => s.conditions.find((c) => c.type === type);
      expect(cond(asleep, 'Ready')?.status).toBe('False');
      expect(cond(asleep, 'EtcdReady')).toMatchObject({ status: 'False', reason: 'Asleep' });
      expect(cond(asleep, 'KubeconfigPublished')?.status).toBe('True');
      expect(asleep.kubeconfigSecretRef).not.toBeNull();
      expect((await handle.query(progressQuery)).phase).toBe('Sleeping');

      // Waking starts the processes again on the same allocation, then promotes as before.
      await handle.signal(specChangedSignal, { spec: { ...args.spec, sleep: false }, generation: 3 });
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready again');
      expect(control.calls).toEqual([
        'sleepTenant',
        'startEtcd',
        'startApiserver',
        'startControllerManager',
        'startScheduler',
        'deployClusterTree',
        'promoteResources',
      ]);
      expect(cond(control.statuses.at(-1)!, 'EtcdReady')?.status).toBe('True');
      expect(control.statuses.at(-1)!.observedGeneration).toBe(3);

      // A failed wake stays Sleeping (WakeFailed), undoes nothing, and the retry signal wakes it.
      await handle.signal(specChangedSignal, { spec: { ...args.spec, sleep: true }, generation: 4 });
      await until(() => control.statuses.at(-1)?.reason === 'Asleep', 'Sleeping again');
      control.failAt = 'startApiserver';
      control.calls.length = 0;
      await handle.signal(specChangedSignal, { spec: { ...args.spec, sleep: false }, generation: 5 });
      await until(() => control.statuses.at(-1)?.reason === 'WakeFailed', 'WakeFailed');
      expect(control.statuses.at(-1)?.phase).toBe('Sleeping');
      expect(control.calls).toEqual(['startEtcd', 'startApiserver']);
      const steps = (await handle.query(progressQuery)).steps;
      expect(steps.find((x) => x.name === 'startApiserver')?.state).toBe('failed');
      expect(steps.find((x) => x.name === 'allocate')?.state).toBe('done');
      control.failAt = undefined;
      await handle.signal(retrySignal);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready after the retry');
      expect(control.calls).not.toContain('release');
      expect((await handle.query(progressQuery)).steps.every((x) => x.state === 'done')).toBe(true);

      // A failed sleep likewise: SleepFailed, then the retry signal puts it to sleep.
      control.failAt = 'sleepTenant';
      await handle.signal(specChangedSignal, { spec: { ...args.spec, sleep: true }, generation: 6 });
      await until(() => control.statuses.at(-1)?.reason === 'SleepFailed', 'SleepFailed');
      control.failAt = undefined;
      await handle.signal(retrySignal);
      await until(() => control.statuses.at(-1)?.reason === 'Asleep', 'Asleep after the retry');

      // Deleted while asleep: the full teardown.
      control.calls.length = 0;
      await handle.signal(deleteRequestedSignal);
      expect(await handle.result()).toMatchObject({ tornDown: true });
      expect(control.calls).toEqual(TEARDOWN);
    });
  });

  it('renews certificates when due, rotates the CA with an overlap, and never compensates a failure', async () => {
    const control = newControl();
    control.renewInMs = 2_000;
    control.caOverlapMs = 4_000;
    const args = input();
    const cond = (type: string) => control.statuses.at(-1)?.conditions.find((c) => c.type === type);
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      const ready = control.statuses.at(-1)!;
      expect(ready.certificates).toMatchObject({
        caFingerprint: 'ca-0',
        caRotation: 0,
        previousCARetiresAt: null,
      });
      expect(cond('CertificatesValid')).toMatchObject({ status: 'True', reason: 'Valid' });
      expect(cond('CertificatesValid')?.message).toContain(ready.certificates!.notAfter);

      // Renewal falls due (a durable timer) while the tenant is Ready, and keeps it Ready.
      await until(() => control.calls.includes('renewCertificates:renew'), 'a renewal', 10_000);
      await until(() => cond('CertificatesValid')?.reason === 'Valid', 'renewed');
      expect(control.statuses.at(-1)!.phase).toBe('Ready');
      expect(Date.parse(control.statuses.at(-1)!.certificates!.renewAt)).toBeGreaterThan(
        Date.parse(ready.certificates!.renewAt),
      );

      // rotate-ca: a new CA at once, both trusted for the overlap, then the old one retired.
      await handle.signal(specChangedSignal, {
        spec: { ...args.spec, certificates: { caRotation: 1 } },
        generation: 2,
      });
      await until(() => cond('CertificatesValid')?.reason === 'CARotating', 'the rotation');
      expect(control.statuses.at(-1)!.certificates).toMatchObject({
        caRotation: 1,
        previousCAFingerprint: 'old',
      });
      // A renewal during the overlap (a new validity) keeps it: the old CA is still retired on time.
      await handle.signal(specChangedSignal, {
        spec: { ...args.spec, certificates: { caRotation: 1, validity: '3h' } },
        generation: 3,
      });
      await until(
        () => control.calls.filter((c) => c === 'renewCertificates:renew').length >= 2,
        'a renewal',
      );
      await until(() => cond('CertificatesValid')?.reason === 'CARotating', 'still rotating');
      expect(control.statuses.at(-1)!.certificates?.previousCARetiresAt).toBe(control.overlapUntil);
      await until(() => control.calls.includes('renewCertificates:retireCA'), 'the retirement', 10_000);
      await until(() => cond('CertificatesValid')?.reason === 'Valid', 'retired');
      expect(control.statuses.at(-1)!.certificates).toMatchObject({
        caFingerprint: 'ca-1',
        previousCAFingerprint: null,
        previousCARetiresAt: null,
      });

      // A failed renewal (here forced by a new validity) leaves the tenant Ready and undoes nothing.
      control.failAt = 'renewCertificates:renew';
      control.calls.length = 0;
      await handle.signal(specChangedSignal, {
        spec: { ...args.spec, certificates: { caRotation: 1, validity: '2h' } },
        generation: 4,
      });
      await until(() => cond('CertificatesValid')?.reason === 'RenewalFailed', 'RenewalFailed');
      expect(control.statuses.at(-1)!.phase).toBe('Ready');
      expect(cond('CertificatesValid')?.message).toContain('renewCertificates:renew failed on purpose');
      expect(control.calls).toEqual(['renewCertificates:renew']);
      control.failAt = undefined;

      await handle.signal(deleteRequestedSignal);
      expect(await handle.result()).toMatchObject({ tornDown: true });
    });
  });

  it('learns when the certificates of a tenant from before renewal expire when the watcher asks', async () => {
    const control = newControl();
    control.resultsWithoutExpiry = true;
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      // Here the run asks at once (it is not a replay); an older run only when woken: the signal.
      await until(() => control.calls.includes('inspectCertificates'), 'the inspection');
      await until(() => control.statuses.at(-1)?.certificates != null, 'status.certificates');
      await handle.signal(checkCertificatesSignal);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      expect(control.calls.filter((c) => c === 'inspectCertificates')).toHaveLength(1);
    });
  });

  it("adds clusterTree to a tenant from before it without taking over its nodes' health", async () => {
    // A run carried from before clusterTree rests Initialized: this pass starts no
    // controller-manager, so the one running may still judge its nodes (ADR 12, decision 19).
    const control = { ...newControl(), treeInputs: [] as unknown[] };
    const fresh = { ...newControl(), treeInputs: [] as unknown[] };
    const args = input();
    const allocation = {
      id: 'ns-vc-00000000',
      dir: '/nonexistent/ns-vc-00000000',
      address: '127.0.0.1',
      ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
      serviceCIDR: '10.96.0.0/12',
    };
    const started = STEP_NAMES.filter((s) => s !== 'deployClusterTree' && s !== 'promoteResources');
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, {
        ...args,
        carried: {
          phase: 'Initialized',
          reason: 'ControlPlaneReady',
          message: 'control plane serving',
          allocation,
          started: [...started],
          conditions: [],
          endpoint: 'https://127.0.0.1:3',
        },
      });
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      expect(control.calls.slice(0, 2)).toEqual(['deployClusterTree', 'promoteResources']);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
    expect(control.treeInputs).toEqual([expect.objectContaining({ nodeHealthFromHost: false })]);
    // A tenant provisioned whole, its controller-manager started in the same pass: left to the default.
    await withWorker(fresh, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await until(() => fresh.statuses.at(-1)?.phase === 'Ready', 'Ready');
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
    expect(fresh.treeInputs).toHaveLength(1);
    expect(fresh.treeInputs[0]).not.toHaveProperty('nodeHealthFromHost');
  });

  it('sleeps when idle, wakes on the first request or a spec change, and stops listening then', async () => {
    const control = newControl();
    let request = hold(control, 'awaitTenantRequest');
    const autoSleep = { idleAfter: '2s' };
    const args = { ...input(), spec: { serviceCIDR: '10.96.0.0/12', autoSleep } };
    const last = () => control.statuses.at(-1);
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => last()?.phase === 'Ready', 'Ready');
      // Idle for 2 s (no request in the audit log): asleep, listening for the first request.
      await until(() => last()?.reason === 'Idle', 'asleep for idleness', 15_000);
      expect(control.calls.slice(ALL_STEPS.length, ALL_STEPS.length + 3)).toEqual([
        'lastTenantRequest',
        'sleepTenant',
        'awaitTenantRequest',
      ]);
      // Idle is said by the listener once it listens, not before: a client that reads it and
      // connects finds it listening. The workflow wrote no Idle of its own.
      expect(control.announced).toEqual([last()]);
      expect(control.statuses.filter((st) => st.reason === 'Idle')).toHaveLength(1);
      expect(last()?.message).toMatch(/no request for 2s: .*the first request \(or a spec change\) wakes it/);
      await request.reached;
      control.calls.length = 0;
      request.release();
      await until(() => last()?.phase === 'Ready', 'woken by the request');
      expect(control.calls).toEqual([
        'startEtcd',
        'startApiserver',
        'startControllerManager',
        'startScheduler',
        'deployClusterTree',
        'promoteResources',
      ]);

      // A request in the audit log keeps it awake a while longer.
      request = hold(control, 'awaitTenantRequest');
      control.calls.length = 0;
      control.lastRequestAt = new Date(Date.now() + 3_000).toISOString();
      await until(() => control.calls.includes('lastTenantRequest'), 'the idle check');
      // Not asleep before that request is idleAfter old.
      const asleepAgain = Date.parse(control.lastRequestAt) + 2_000;
      await until(() => last()?.reason === 'Idle', 'asleep again', 15_000);
      expect(Date.now()).toBeGreaterThanOrEqual(asleepAgain);
      expect(control.calls.indexOf('sleepTenant')).toBeGreaterThan(
        control.calls.indexOf('lastTenantRequest'),
      );
      await request.reached;

      // A new generation with the same spec (the operator's own spec.kubeconfig write after a
      // renewal) leaves it asleep; a real spec change wakes it: the wait is cancelled first.
      request = hold(control, 'awaitTenantRequest');
      await handle.signal(specChangedSignal, { spec: args.spec, generation: 2 });
      await until(() => last()?.observedGeneration === 2, 'generation 2 recorded');
      expect(last()?.reason).toBe('Idle');
      await request.reached; // listening again
      control.calls.length = 0;
      await handle.signal(specChangedSignal, {
        spec: { ...args.spec, autoSleep: { idleAfter: '1h' } },
        generation: 3,
      });
      await until(() => last()?.phase === 'Ready' && last()?.observedGeneration === 3, 'woken by the spec');
      // The wait stopped (the port is free) before anything started.
      expect(control.calls.slice(0, 2)).toEqual(['awaitTenantRequest:cancelled', 'startEtcd']);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('runs a day of operations in one history: renewal, CA rotation, a backup schedule, idle sleep and wake', async () => {
    // Also the replay fixture virtualcluster-day2 (KVC_RECORD_DAY2_HISTORY=<file> records it anew).
    const control = newControl();
    control.renewInMs = 1_500;
    control.caOverlapMs = 1_500;
    const request = hold(control, 'awaitTenantRequest');
    const spec = {
      serviceCIDR: '10.96.0.0/12',
      backup: { schedule: '@daily', retention: 3 },
      autoSleep: { idleAfter: '1h' },
    };
    const args = { ...input(), spec };
    const last = () => control.statuses.at(-1);
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.calls.includes('renewCertificates:renew'), 'a renewal', 10_000);
      await until(
        () => last()?.conditions.find((c) => c.type === 'BackupScheduled')?.status === 'True',
        'scheduled',
      );
      await handle.signal(specChangedSignal, {
        spec: { ...spec, certificates: { caRotation: 1 } },
        generation: 2,
      });
      await until(() => control.calls.includes('renewCertificates:retireCA'), 'the rotation retired', 10_000);
      await handle.signal(specChangedSignal, {
        spec: { ...spec, certificates: { caRotation: 1 }, autoSleep: { idleAfter: '1s' } },
        generation: 3,
      });
      await until(() => last()?.reason === 'Idle', 'asleep for idleness', 10_000);
      await request.reached;
      request.release();
      await until(() => last()?.phase === 'Ready' && control.calls.includes('promoteResources'), 'awake');
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      expect(control.calls).toEqual(expect.arrayContaining(['ensureBackupSchedule:none', 'release']));
      if (process.env.KVC_RECORD_DAY2_HISTORY)
        await writeFile(process.env.KVC_RECORD_DAY2_HISTORY, historyToJSON(await handle.fetchHistory()));
    });
  });

  it('keeps a backup schedule as spec.backup says, removes it on delete, and restores before issuing certificates', async () => {
    const control = newControl();
    const args = {
      ...input(),
      spec: { serviceCIDR: '10.96.0.0/12', backup: { schedule: '@every 15s', retention: 2 } },
    };
    const cond = (type: string) => control.statuses.at(-1)?.conditions.find((c) => c.type === type);
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => cond('BackupScheduled')?.status === 'True', 'the schedule');
      expect(control.calls.slice(ALL_STEPS.length)).toEqual(['ensureBackupSchedule:@every 15s']);
      expect(cond('BackupScheduled')?.message).toBe('backups @every 15s, the last 2 kept');
      await handle.signal(specChangedSignal, { spec: { serviceCIDR: '10.96.0.0/12' }, generation: 2 });
      await until(() => control.calls.includes('ensureBackupSchedule:none'), 'the schedule removed');
      await until(() => cond('BackupScheduled') === undefined, 'the condition removed');
      await handle.signal(specChangedSignal, { spec: args.spec, generation: 3 });
      await until(
        () => control.calls.filter((c) => c === 'ensureBackupSchedule:@every 15s').length === 2,
        'again',
      );
      control.calls.length = 0;
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      expect(control.calls).toEqual(['ensureBackupSchedule:none', ...TEARDOWN]);
    });

    // A tenant made from a backup restores it right after allocate; a bad backup fails it, undone.
    const restoring = newControl();
    const fromBackup = {
      ...input(),
      spec: { serviceCIDR: '10.96.0.0/12', restore: { backup: 'old/b.tar.gz' } },
    };
    await withWorker(restoring, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, fromBackup);
      await until(() => restoring.statuses.at(-1)?.phase === 'Ready', 'Ready');
      expect(restoring.calls.slice(0, 3)).toEqual([
        'allocate',
        'restoreBackup:old/b.tar.gz',
        'issueCertificates',
      ]);
      expect(restoring.statuses.at(-1)?.conditions.find((c) => c.type === 'BackupRestored')).toMatchObject({
        status: 'True',
        message: expect.stringContaining('restored old/b.tar.gz (ns/old') as unknown,
      });
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
    const bad = newControl();
    bad.failAt = 'restoreBackup:old/bad.tar.gz';
    const fromBad = {
      ...input(),
      spec: { serviceCIDR: '10.96.0.0/12', restore: { backup: 'old/bad.tar.gz' } },
    };
    await withWorker(bad, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, fromBad);
      await until(() => bad.statuses.at(-1)?.phase === 'Failed', 'Failed');
      expect(bad.calls).toEqual(['allocate', 'restoreBackup:old/bad.tar.gz', 'release']);
      expect(bad.statuses.at(-1)?.conditions.find((c) => c.type === 'BackupRestored')?.status).toBe('False');
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('stops provisioning when deleted mid-way, lets the running steps end, then tears everything down', async () => {
    const control = newControl();
    const etcd = hold(control, 'startEtcd');
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await etcd.reached;
      await handle.signal(deleteRequestedSignal);
      etcd.release();
      await handle.result();
      // Teardown undoes every step (each undo is idempotent), not only those this run started.
      // The API server's step started with etcd's (ADR 12, decision 22) and ran to its end
      // before teardown.
      expect(inStepOrder(control.calls)).toEqual([
        'allocate',
        'issueCertificates',
        'startEtcd',
        'startApiserver',
        ...TEARDOWN,
      ]);
      expect(control.statuses.some((s) => s.phase === 'Ready')).toBe(false);
    });
  });

  it('continues as new when the history grows, carrying what teardown needs', async () => {
    const control = newControl();
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      const firstRun = (await handle.describe()).runId;
      // Each recorded spec change adds a signal, a status write and workflow tasks to history;
      // the test server suggests continue-as-new after 150 events. One change at a time, each
      // waited for, so the history grows the same way on every run.
      const latest = env.client.workflow.getHandle(handle.workflowId);
      let generation = 1;
      while ((await latest.describe()).runId === firstRun) {
        expect(generation).toBeLessThan(150);
        generation++;
        await latest.signal(specChangedSignal, { spec: { serviceCIDR: '10.96.0.0/12' }, generation });
        const g = generation;
        await until(() => control.statuses.at(-1)?.observedGeneration === g, `generation ${g} recorded`);
      }
      await until(async () => (await latest.query(progressQuery)).phase === 'Ready', 'the new run to answer');
      expect((await latest.query(progressQuery)).generation).toBe(generation);
      const progress = await latest.query(progressQuery);
      expect(progress.phase).toBe('Ready');
      expect(progress.allocation?.id).toBe('ns-vc-00000000');
      control.calls.length = 0;
      await latest.signal(deleteRequestedSignal);
      await latest.result();
      expect(control.calls).toEqual(TEARDOWN);
    });
  });

  it('retries a step that fails transiently, with backoff, and carries on', async () => {
    const control: StubControl = { ...newControl(), transient: new Map([['startApiserver', 2]]) };
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      expect(control.calls.filter((c) => c === 'startApiserver')).toHaveLength(3);
      expect(control.calls.filter((c) => c.startsWith('stop:'))).toEqual([]);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('tears down from the identity alone when a run is started only to delete', async () => {
    // What the watcher does when the object is deleted and no workflow runs (terminated by hand).
    const control = newControl();
    const args = input();
    await withWorker(control, async (taskQueue) => {
      const handle = await env.client.workflow.signalWithStart('virtualClusterWorkflow', {
        workflowId: workflowIdFor(args.ref),
        taskQueue,
        args: [args],
        signal: deleteRequestedSignal,
        signalArgs: [],
      });
      await handle.result();
      expect(control.calls).not.toContain('startEtcd');
      expect(control.calls.slice(-TEARDOWN.length)).toEqual(TEARDOWN);
    });
  });

  it('undoes clusterTree and the control plane when deploying clusterTree fails', async () => {
    const control: StubControl = { ...newControl(), failAt: 'deployClusterTree' };
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, input());
      await until(() => control.statuses.at(-1)?.phase === 'Failed', 'Failed');
      expect(control.calls.slice(STEP_NAMES.indexOf('deployClusterTree'))).toEqual([
        'deployClusterTree',
        ...TEARDOWN.slice(1),
      ]);
      const failed = control.statuses.at(-1)!;
      expect(failed.conditions.find((c) => c.type === 'ClusterTreeReady')?.status).toBe('False');
      expect(failed.promoted).toBeNull();
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('after a failed resize, tries it again at once only for a new spec.promoteResources', async () => {
    // (Its timer's retry: the next test.)
    // Also the replay fixture virtualcluster-resize-failed (KVC_RECORD_RESIZE_HISTORY=<file>).
    const control = newControl();
    const spec = { serviceCIDR: '10.96.0.0/12', promoteResources: { nodes: ['node-a'] } };
    // A spec from before spec.podSecurity had its CRD default; no timer retry within the test.
    const args: VirtualClusterWorkflowInput = { ...input(), spec, promotionRetryMs: 120_000 };
    const last = () => control.statuses.at(-1);
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => last()?.phase === 'Ready', 'Ready');
      const resized = { ...spec, promoteResources: { nodes: ['node-a'], resources: { cpu: 4 } } };
      await failResize(handle, control, resized);
      expect(last()?.phase).toBe('Ready');
      control.calls.length = 0;

      // The same spec as served with the CRD's defaults (a spec.kubeconfig write's generation),
      // then a change elsewhere: recorded, still ResizeFailed, no resize tried.
      await handle.signal(specChangedSignal, {
        spec: { ...resized, podSecurity: 'baseline' },
        generation: 3,
      });
      await until(() => last()?.observedGeneration === 3, 'generation 3 recorded');
      const other = { ...resized, podSecurity: 'baseline' as const, certSANs: ['a.example.com'] };
      await handle.signal(specChangedSignal, { spec: other, generation: 4 });
      await until(() => last()?.observedGeneration === 4, 'generation 4 recorded');
      expect(last()?.reason).toBe('ResizeFailed');
      expect(control.calls).toEqual([]);

      // A new spec.promoteResources is applied at once.
      control.failAt = undefined;
      const smaller = { ...other, promoteResources: { nodes: ['node-a'], resources: { cpu: 2 } } };
      await handle.signal(specChangedSignal, { spec: smaller, generation: 5 });
      await until(() => last()?.observedGeneration === 5 && last()?.reason === 'Ready', 'resized');
      expect(control.calls).toEqual(['promoteResources']);
      expect(
        control.statuses.some(
          (st) =>
            st.reason === 'Resizing' &&
            st.observedGeneration === 5 &&
            /new spec.promoteResources/.test(st.message ?? ''),
        ),
      ).toBe(true);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
      // The first run: the code before the patches continued it as new after generation 5
      // (CONTINUE_AS_NEW_AFTER_EVENTS), having tried the resize at generations 3 and 4.
      await recordFirstRun(handle, 'KVC_RECORD_RESIZE_HISTORY');
    });
  });

  it('tries a failed resize again by its timer, and named nodes still missing on time whatever else wakes it', async () => {
    const control = newControl();
    const spec = { serviceCIDR: '10.96.0.0/12', promoteResources: { nodes: ['node-a'] } };
    const args: VirtualClusterWorkflowInput = { ...input(), spec, promotionRetryMs: 1_500 };
    const last = () => control.statuses.at(-1);
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => last()?.phase === 'Ready', 'Ready');
      const resized = { ...spec, promoteResources: { nodes: ['node-a', 'node-b'] } };
      await failResize(handle, control, resized);
      control.failAt = undefined;
      control.missingNodes = new Set(['node-b']);
      control.calls.length = 0;
      const before = control.statuses.length;
      // The timer tries the resize again: node-a promoted, node-b missing.
      await until(() => control.calls.includes('promoteResources'), 'the resize tried again', 10_000);
      await until(() => last()?.reason === 'Ready', 'Ready again');
      expect(
        control.statuses
          .slice(before)
          .filter((st) => st.reason === 'Resizing')
          .map((st) => st.message),
      ).toEqual(['applying spec.promoteResources again']);
      expect(last()?.promoted?.pending.map((p) => p.node)).toEqual(['node-b']);

      // node-b is still missing: tried again every 1.5 s, though new generations (the operator's
      // spec.kubeconfig writes, say) come every 0.4 s and wake the workflow each time.
      control.calls.length = 0;
      const retried = control.statuses.length;
      let generation = 2;
      const deadline = Date.now() + 12_000;
      while (!control.calls.includes('promoteResources') && Date.now() < deadline) {
        await handle.signal(specChangedSignal, { spec: resized, generation: ++generation });
        await new Promise((r) => setTimeout(r, 400));
      }
      expect(control.calls).toContain('promoteResources');
      expect(generation).toBeGreaterThan(3); // it came while generations kept arriving
      await until(
        () => control.statuses.slice(retried).some((st) => st.reason === 'Resizing'),
        'retry reported',
      );
      expect(control.statuses.slice(retried).find((st) => st.reason === 'Resizing')?.message).toBe(
        'promoting the nodes that were not available',
      );
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });

  it('tries missing nodes again on time while a tenant in use is checked for idleness more often', async () => {
    // Also the replay fixture virtualcluster-promotion-retry (KVC_RECORD_RETRY_HISTORY=<file>;
    // recorded with a 4 s period).
    const control: StubControl = { ...newControl(), missingNodes: new Set(['node-b']) };
    control.lastRequestAt = new Date().toISOString();
    const args: VirtualClusterWorkflowInput = {
      ...input(),
      spec: {
        serviceCIDR: '10.96.0.0/12',
        promoteResources: { nodes: ['node-a', 'node-b'] },
        autoSleep: { idleAfter: '2s' },
      },
      // Idle checks at ~2 and ~4 s, the retry at ~5 s: a second apart, whatever the timers' lag.
      promotionRetryMs: 5_000,
    };
    // In use: a request in its audit log every 0.3 s, so each idle check (every ~2 s) finds one.
    const inUse = setInterval(() => (control.lastRequestAt = new Date().toISOString()), 300);
    try {
      await withWorker(control, async (taskQueue) => {
        const handle = await startWorkflow(taskQueue, args);
        await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
        expect(control.statuses.at(-1)?.promoted?.pending.map((p) => p.node)).toEqual(['node-b']);
        control.calls.length = 0;
        await until(() => control.calls.includes('promoteResources'), 'node-b tried again', 15_000);
        // Checked for idleness meanwhile, more often than the retry's period, and kept awake.
        expect(control.calls.filter((c) => c === 'lastTenantRequest').length).toBeGreaterThanOrEqual(2);
        expect(control.calls).not.toContain('sleepTenant');
        await handle.signal(deleteRequestedSignal);
        await handle.result();
        // The first run: the one with the idle checks, whether or not it continued as new.
        await recordFirstRun(handle, 'KVC_RECORD_RETRY_HISTORY');
      });
    } finally {
      clearInterval(inUse);
    }
  });

  it('promotes nodes that appear later, and applies a resize without touching the control plane', async () => {
    const control: StubControl = { ...newControl(), missingNodes: new Set(['node-b']) };
    const args: VirtualClusterWorkflowInput = {
      ...input(),
      spec: { serviceCIDR: '10.96.0.0/12', promoteResources: { nodes: ['node-a', 'node-b'] } },
      promotionRetryMs: 300,
    };
    await withWorker(control, async (taskQueue) => {
      const handle = await startWorkflow(taskQueue, args);
      await until(() => control.statuses.at(-1)?.phase === 'Ready', 'Ready');
      const first = control.statuses.at(-1)!;
      expect(first.promoted?.nodes).toEqual(['node-a']);
      expect(first.promoted?.pending.map((p) => p.node)).toEqual(['node-b']);
      const cond = first.conditions.find((c) => c.type === 'NodesPromoted');
      expect(cond).toMatchObject({ status: 'False', reason: 'NodeNotFound' });

      // node-b appears: the retry timer promotes it.
      control.missingNodes!.clear();
      await until(() => control.statuses.at(-1)?.promoted?.nodeCount === 2, 'node-b promoted');
      expect(control.statuses.at(-1)!.conditions.find((c) => c.type === 'NodesPromoted')?.status).toBe(
        'True',
      );

      // A resize runs promoteResources again and nothing else.
      control.calls.length = 0;
      await handle.signal(specChangedSignal, {
        spec: { serviceCIDR: '10.96.0.0/12', promoteResources: { nodes: ['node-a'], resources: { cpu: 4 } } },
        generation: 2,
      });
      await until(
        () =>
          control.statuses.at(-1)?.observedGeneration === 2 &&
          control.statuses.at(-1)?.promoted?.nodeCount === 1,
        'resized',
      );
      expect(control.calls).toEqual(['promoteResources']);
      // With nothing pending, the timer stops: no further promotion calls.
      await new Promise((r) => setTimeout(r, 1000));
      expect(control.calls).toEqual(['promoteResources']);
      await handle.signal(deleteRequestedSignal);
      await handle.result();
    });
  });
});
