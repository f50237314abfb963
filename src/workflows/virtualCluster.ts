/**
 * One long-running entity workflow per VirtualCluster.
 *
 * Provisioning is an ordered list of idempotent steps. Before a step runs, its undo is pushed,
 * so a permanent failure undoes the failed step's partial work too, then every earlier step,
 * in reverse. After provisioning the workflow waits for spec changes, a retry or the delete
 * request; deletion undoes everything and ends the workflow, which is the watcher's cue to
 * remove the finalizer.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Condition, Phase } from '../api/virtualCluster.js';
import type { ControlPlaneComponent, StepInput, TenantAllocation } from '../activities/types.js';
import { status, steps, undo } from './activities.js';
import {
  STEP_NAMES,
  deleteRequestedSignal,
  progressQuery,
  retrySignal,
  searchAttributes,
  specChangedSignal,
  type CarriedState,
  type Progress,
  type SpecChange,
  type StepName,
  type StepState,
  type VirtualClusterWorkflowInput,
  type VirtualClusterWorkflowResult,
} from './definitions.js';

/** The condition each step sets when it is done. */
export const STEP_CONDITIONS: Record<StepName, string> = {
  allocate: 'Allocated',
  issueCertificates: 'CertificatesIssued',
  startEtcd: 'EtcdReady',
  startApiserver: 'APIServerReady',
  startControllerManager: 'ControllerManagerReady',
  startScheduler: 'SchedulerReady',
  publishKubeconfig: 'KubeconfigPublished',
};

const COMPONENT_OF: Partial<Record<StepName, ControlPlaneComponent>> = {
  startEtcd: 'etcd',
  startApiserver: 'kube-apiserver',
  startControllerManager: 'kube-controller-manager',
  startScheduler: 'kube-scheduler',
};

class DeleteRequested extends Error {
  override readonly name = 'DeleteRequested';
}

/** Reason and message of a failed step, from what the activity threw. */
function describeFailure(err: unknown): { reason: string; message: string } {
  let cause: unknown = err;
  if (err instanceof ActivityFailure) cause = err.cause ?? err;
  if (cause instanceof ApplicationFailure) {
    return { reason: cause.type ?? 'StepFailed', message: cause.message };
  }
  return { reason: 'StepFailed', message: err instanceof Error ? err.message : String(err) };
}

export async function virtualClusterWorkflow(
  input: VirtualClusterWorkflowInput,
): Promise<VirtualClusterWorkflowResult> {
  const { ref } = input;
  const { workflowId } = workflowInfo();
  let spec = input.spec;
  let generation = input.generation;
  const carried: CarriedState = input.carried ?? {
    phase: 'Pending',
    reason: 'Pending',
    message: 'waiting to be provisioned',
    started: [],
    conditions: [],
  };
  let { phase, reason, message, allocation, endpoint } = carried;
  const started: StepName[] = [...carried.started];
  const conditions = new Map<string, Condition>(carried.conditions.map((c) => [c.type, c]));
  const stepState = new Map<StepName, { state: StepState; message?: string }>();
  for (const s of STEP_NAMES)
    stepState.set(s, { state: phase === 'Initialized' && started.includes(s) ? 'done' : 'pending' });

  let pendingSpec: SpecChange | undefined;
  let deleteRequested = false;
  let retryRequested = false;

  setHandler(specChangedSignal, (change) => {
    if (change.generation > (pendingSpec?.generation ?? generation)) pendingSpec = change;
  });
  setHandler(deleteRequestedSignal, () => {
    deleteRequested = true;
  });
  setHandler(retrySignal, () => {
    retryRequested = true;
  });
  setHandler(progressQuery, (): Progress => ({
    phase,
    generation,
    message,
    steps: STEP_NAMES.map((name) => ({ name, ...stepState.get(name)! })),
    ...(allocation ? { allocation } : {}),
  }));

  function setCondition(type: string, ok: boolean | 'Unknown', why: string, msg: string): void {
    const statusValue = ok === 'Unknown' ? 'Unknown' : ok ? 'True' : 'False';
    const prev = conditions.get(type);
    conditions.set(type, {
      type,
      status: statusValue,
      observedGeneration: generation,
      lastTransitionTime:
        prev && prev.status === statusValue ? prev.lastTransitionTime : new Date().toISOString(),
      reason: why,
      message: msg,
    });
  }

  /**
   * Status writes run one after another, in order, but alongside the steps: a step does not
   * wait for the write that announces it. Callers await the returned promise where the order
   * against later work matters (final phases, before continue-as-new).
   */
  let statusWrites: Promise<void> = Promise.resolve();
  function report(next: Phase, why: string, msg: string): Promise<void> {
    phase = next;
    reason = why;
    message = msg;
    setCondition('Ready', next === 'Initialized' || next === 'Ready', why, msg);
    if (input.searchAttributes) upsertSearchAttributes([{ key: searchAttributes.phase, value: next }]);
    const snapshot = {
      ref,
      status: {
        phase: next,
        reason: why,
        message: msg,
        observedGeneration: generation,
        conditions: [...conditions.values()],
        workflowId,
        apiServerEndpoint: endpoint ?? null,
        kubeconfigSecretRef:
          started.includes('publishKubeconfig') && next !== 'Failed'
            ? { name: `${ref.name}-kubeconfig`, key: 'kubeconfig' }
            : null,
      },
    };
    statusWrites = statusWrites.catch(() => undefined).then(() => status.reportStatus(snapshot));
    return statusWrites;
  }

  async function run<T>(name: StepName, fn: () => Promise<T>): Promise<T> {
    if (deleteRequested) throw new DeleteRequested();
    if (!started.includes(name)) started.push(name);
    stepState.set(name, { state: 'running' });
    const index = STEP_NAMES.indexOf(name) + 1;
    void report('Preparing', 'Provisioning', `step ${index}/${STEP_NAMES.length}: ${name}`);
    try {
      const result = await fn();
      stepState.set(name, { state: 'done' });
      setCondition(STEP_CONDITIONS[name], true, 'Succeeded', `${name} done`);
      return result;
    } catch (err) {
      const f = describeFailure(err);
      stepState.set(name, { state: 'failed', message: f.message });
      setCondition(STEP_CONDITIONS[name], false, f.reason, f.message);
      throw err;
    }
  }

  /**
   * Undoes steps newest first, even while the workflow is being cancelled: after a failure the
   * steps that started; on teardown all of them, since every undo is idempotent and a run that
   * was re-created only to tear down never saw what an earlier run started.
   */
  async function compensate(all: boolean): Promise<void> {
    await CancellationScope.nonCancellable(async () => {
      for (const name of [...STEP_NAMES].reverse()) {
        if (!all && !started.includes(name)) continue;
        const component = COMPONENT_OF[name];
        if (name === 'publishKubeconfig') await undo.unpublishKubeconfig({ ref });
        else if (component) await undo.stopComponent({ ref, component });
        else if (name === 'allocate') await undo.release({ ref });
        // The failed step keeps its condition and state: that is where the reason is.
        if (stepState.get(name)?.state === 'failed') continue;
        if (started.includes(name)) {
          stepState.set(name, { state: 'undone' });
          setCondition(STEP_CONDITIONS[name], false, 'RolledBack', `${name} undone`);
        }
      }
      started.length = 0;
      allocation = undefined;
      endpoint = undefined;
    });
  }

  async function provision(): Promise<void> {
    for (const s of STEP_NAMES) stepState.set(s, { state: 'pending' });
    try {
      const a: TenantAllocation = await run('allocate', () =>
        steps.allocate({ ref, serviceCIDR: spec.serviceCIDR }),
      );
      allocation = a;
      const step: StepInput = { ref, allocation: a };
      await run('issueCertificates', () => steps.issueCertificates({ ...step, spec }));
      await run('startEtcd', () => steps.startEtcd(step));
      await run('startApiserver', () => steps.startApiserver(step));
      await run('startControllerManager', () => steps.startControllerManager(step));
      await run('startScheduler', () => steps.startScheduler(step));
      const published = await run('publishKubeconfig', () => steps.publishKubeconfig(step));
      endpoint = published.endpoint;
      await report('Initialized', 'ControlPlaneReady', `control plane serving at ${endpoint}`);
    } catch (err) {
      if (err instanceof DeleteRequested) return; // the main loop tears down
      const f = describeFailure(err);
      log.warn('provisioning failed; compensating', { reason: f.reason, message: f.message });
      await report('Preparing', 'Compensating', `undoing completed steps after: ${f.message}`);
      await compensate(false);
      await report('Failed', f.reason, f.message);
    }
  }

  async function teardown(): Promise<VirtualClusterWorkflowResult> {
    await report('Deleting', 'Deleting', 'tearing the tenant down');
    const id = allocation?.id;
    await compensate(true);
    log.info('tenant torn down', { tenant: id });
    return { tornDown: true, ...(id ? { tenantId: id } : {}) };
  }

  // A new workflow provisions; a run continued-as-new is already Initialized or Failed.
  if (phase !== 'Initialized' && phase !== 'Failed') await provision();

  for (;;) {
    if (deleteRequested) return teardown();
    await condition(
      () =>
        deleteRequested ||
        retryRequested ||
        pendingSpec !== undefined ||
        workflowInfo().continueAsNewSuggested,
    );
    if (deleteRequested) continue;
    if (pendingSpec) {
      const change = pendingSpec;
      pendingSpec = undefined;
      spec = change.spec;
      generation = change.generation;
      if (phase === 'Failed') retryRequested = true;
      else await report(phase, reason, message); // records observedGeneration
    }
    if (retryRequested) {
      retryRequested = false;
      if (phase === 'Failed') await provision();
    }
    if (workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      await statusWrites;
      // Anything that arrived meanwhile is handled in this run: it is not carried over.
      if (deleteRequested || retryRequested || pendingSpec) continue;
      const next: CarriedState = {
        phase,
        reason,
        message,
        started,
        conditions: [...conditions.values()],
        ...(allocation ? { allocation } : {}),
        ...(endpoint ? { endpoint } : {}),
      };
      await continueAsNew<typeof virtualClusterWorkflow>({ ...input, spec, generation, carried: next });
    }
  }
}
