/**
 * One long-running entity workflow per VirtualCluster.
 *
 * Provisioning is an ordered list of idempotent steps (etcd's and the API server's at once where
 * control planes are processes: ADR 12, decision 22). Before a step runs, its undo is pushed,
 * so a permanent failure undoes the failed step's partial work too, then every earlier step,
 * in reverse. After provisioning the workflow waits for spec changes, a retry or the delete
 * request; deletion undoes everything and ends the workflow, which is the watcher's cue to
 * remove the finalizer.
 */
import {
  CancellationScope,
  allHandlersFinished,
  condition,
  continueAsNew,
  isCancellation,
  log,
  patched,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Condition, Phase } from '../api/virtualCluster.js';
import type {
  CertificateAction,
  CertificateState,
  DeployClusterTreeInput,
  PromotedStatus,
  PromotionResult,
  StatusReport,
  StepInput,
  TenantAllocation,
} from '../activities/types.js';
import { parseDuration } from '../api/duration.js';
import { promotion, startingAtOnce, steps, undo, waits } from './activities.js';
import {
  CERTIFICATE_RETRY_MS,
  RENEWAL_SPACING_MS,
  certificateCondition,
  certificateDeadline,
  certificatePolicy,
  certificateStateOf,
  certificateWork,
  certificatesStatus,
} from './certificates.js';
import {
  STEP_NAMES,
  checkCertificatesSignal,
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
import {
  BACKUP_PATCH,
  CERTIFICATES_PATCH,
  CLUSTERTREE_PATCH,
  LISTEN_PATCH,
  PROMOTION_DEADLINE_PATCH,
  RESIZE_ON_CHANGE_PATCH,
  SPEC_DEFAULTS_PATCH,
  SPEC_RETRY_PATCH,
  TOGETHER_PATCH,
} from './patches.js';
import { samePromotion, sameDesiredSpec } from './spec.js';
import { statusChain, type StatusSnapshot } from './statusChain.js';
import {
  CLUSTERTREE_STEPS,
  COMPONENT_OF,
  DeleteRequested,
  PROCESS_STEPS,
  STEP_CONDITIONS,
  describeFailure,
} from './steps.js';

const DEFAULT_PROMOTION_RETRY_MS = 30_000;
/** A failed sleep or wake of auto sleep is tried again after this long (no one may send a retry). */
const AUTO_RETRY_MS = 60_000;

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
  let { phase, reason, message, allocation, endpoint, promoted, appliedPromotion } = carried;
  let certs: CertificateState | undefined = carried.certificates;
  let appliedCertificatePolicy = carried.appliedCertificatePolicy;
  const certificateTiming = { renewNotBefore: 0, retryAfter: 0 };
  let certificateFailure: string | undefined;
  let certificatesInspected = false;
  let appliedBackup = carried.appliedBackup;
  /** spec.autoSleep: asleep for idleness (woken by a request or a spec change). */
  let idleAsleep = carried.idleAsleep ?? false;
  let lastActiveAt = carried.lastActiveAt ? Date.parse(carried.lastActiveAt) : Date.now();
  let requestWaitRetryAfter = 0;
  /**
   * A failed sleep or wake of auto sleep is tried again at this time (no one may send a retry);
   * a run continued-as-new in such a state tries at once.
   */
  let autoRetryAt: number | undefined =
    phase === 'Sleeping' &&
    ((reason === 'WakeFailed' && spec.autoSleep !== undefined) || (reason === 'SleepFailed' && idleAsleep))
      ? Date.now()
      : undefined;
  let backupRetryAfter = 0;
  /**
   * When an incomplete promotion is tried again. Kept across the loop's other wake-ups within a
   * run (PROMOTION_DEADLINE_PATCH); set anew after each attempt, and by a run continued as new.
   */
  let promotionRetryAt: number | undefined;
  /**
   * Named nodes still waiting (missing, taken, refused), or the spec not applied (a failed resize
   * leaves appliedPromotion unset): try again later.
   */
  const promotionIncomplete = (): boolean => (promoted?.pending.length ?? 0) > 0 || !promotionApplied();
  /** spec.promoteResources is the one last applied (a failed resize leaves none applied). */
  const promotionApplied = (): boolean => appliedPromotion === JSON.stringify(spec.promoteResources ?? {});
  const started: StepName[] = [...carried.started];
  const conditions = new Map<string, Condition>(carried.conditions.map((c) => [c.type, c]));
  const stepState = new Map<StepName, { state: StepState; message?: string }>();
  for (const s of STEP_NAMES)
    stepState.set(s, {
      state:
        (phase === 'Ready' || (phase === 'Sleeping' && !PROCESS_STEPS.includes(s))) && started.includes(s)
          ? 'done'
          : 'pending',
    });

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
  let checkCertificates = false;
  setHandler(checkCertificatesSignal, () => {
    checkCertificates = true;
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

  /** Status writes, in order, alongside the steps (statusChain.ts). */
  const statusWrites = statusChain();
  const write = statusWrites.write;
  /**
   * The Idle status a listener writes once it listens (LISTEN_PATCH); written by the workflow
   * instead when no listener takes it, or one ends without a request.
   */
  let announce: StatusSnapshot | undefined;
  function report(next: Phase, why: string, msg: string): Promise<void> {
    // A newer status: an Idle one not yet written would be older than it.
    announce = undefined;
    return write(settle(next, why, msg));
  }
  /** Takes the phase, reason and message on, and returns the status to write. */
  function settle(next: Phase, why: string, msg: string): StatusSnapshot {
    phase = next;
    reason = why;
    message = msg;
    setCondition('Ready', next === 'Ready', why, msg);
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
        // Once the Secret is written (the step done), not while it is being written, nor once
        // it is being removed (undone after a failure, or the tenant deleted).
        kubeconfigSecretRef:
          conditions.get(STEP_CONDITIONS.publishKubeconfig)?.status === 'True' &&
          next !== 'Failed' &&
          next !== 'Deleting' &&
          why !== 'Compensating'
            ? { name: `${ref.name}-kubeconfig`, key: 'kubeconfig' }
            : null,
        // A sleeping tenant keeps its nodes: they stay claimed for it.
        promoted: (next === 'Ready' || next === 'Sleeping') && promoted ? promoted : null,
        // Cleared after a compensation; a run from before renewal has nothing there to clear.
        certificates: certs ? certificatesStatus(certs) : null,
      },
    };
    return snapshot;
  }

  async function run<T>(name: StepName, fn: () => Promise<T>): Promise<T> {
    if (deleteRequested) throw new DeleteRequested();
    if (!started.includes(name)) started.push(name);
    stepState.set(name, { state: 'running' });
    const index = STEP_NAMES.indexOf(name) + 1;
    // Once the control plane serves, the phase stays Initialized while clusterTree comes up.
    const during =
      started.includes('publishKubeconfig') && name !== 'publishKubeconfig' ? 'Initialized' : 'Preparing';
    void report(during, 'Provisioning', `step ${index}/${STEP_NAMES.length}: ${name}`);
    try {
      const result = await fn();
      stepState.set(name, { state: 'done' });
      setCondition(STEP_CONDITIONS[name], true, 'Succeeded', `${name} done`);
      return result;
    } catch (err) {
      // Cancelled for another step's failure (together): undone with the rest, not failed.
      if (isCancellation(err)) throw err;
      const f = describeFailure(err);
      stepState.set(name, { state: 'failed', message: f.message });
      setCondition(STEP_CONDITIONS[name], false, f.reason, f.message);
      throw err;
    }
  }

  /**
   * Steps run at once, each in a scope of its own: the first to fail cancels the others (their
   * activities wait for the cancellation to complete), every one is awaited to its end
   * (compensation must not stop a component a step still starts), then that first failure is
   * thrown.
   */
  async function together(...fns: (() => Promise<unknown>)[]): Promise<void> {
    const scopes = fns.map(() => new CancellationScope());
    let first: { error: unknown } | undefined;
    const runs = fns.map((fn, i) =>
      scopes[i]!.run(fn).catch((error: unknown) => {
        if (!first) {
          first = { error };
          scopes.forEach((scope, j) => j !== i && scope.cancel());
        }
        throw error;
      }),
    );
    await Promise.allSettled(runs);
    if (first) throw first.error;
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
        // A run from before clusterTree never had these steps: its history has no such undo.
        if (CLUSTERTREE_STEPS.has(name) && !started.includes(name) && !patched(CLUSTERTREE_PATCH)) continue;
        const component = COMPONENT_OF[name];
        if (name === 'promoteResources') await undo.demoteAll({ ref });
        else if (name === 'deployClusterTree') await undo.removeClusterTree({ ref });
        else if (name === 'publishKubeconfig') await undo.unpublishKubeconfig({ ref });
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
      certs = undefined;
      allocation = undefined;
      endpoint = undefined;
      promoted = undefined;
      appliedPromotion = undefined;
    });
  }

  /**
   * Runs the steps from the start, or (`from: 'clusterTree'`) only clusterTree's, for a tenant
   * whose control plane a workflow from before clusterTree provisioned.
   */
  async function provision(from: 'start' | 'clusterTree' = 'start'): Promise<void> {
    if (from === 'start') for (const s of STEP_NAMES) stepState.set(s, { state: 'pending' });
    try {
      let step: StepInput;
      if (from === 'start') {
        const a: TenantAllocation = await run('allocate', () =>
          steps.allocate({ ref, serviceCIDR: spec.serviceCIDR }),
        );
        allocation = a;
        step = { ref, allocation: a };
        if (spec.restore && patched(BACKUP_PATCH)) await restoreFrom(spec.restore.backup, step);
        const issued = await run('issueCertificates', () => steps.issueCertificates({ ...step, spec }));
        certs = certificateStateOf(issued);
        appliedCertificatePolicy = certificatePolicy(spec);
        if (certs) setCertificateCondition();
        if (a.runtime !== 'kubernetes' && patched(TOGETHER_PATCH))
          await together(
            () => run('startEtcd', () => startingAtOnce.startEtcd(step)),
            () => run('startApiserver', () => startingAtOnce.startApiserver(step)),
          );
        else {
          await run('startEtcd', () => steps.startEtcd(step));
          await run('startApiserver', () => steps.startApiserver(step));
        }
        await run('startControllerManager', () => steps.startControllerManager(step));
        await run('startScheduler', () => steps.startScheduler(step));
        const published = await run('publishKubeconfig', () => steps.publishKubeconfig(step));
        endpoint = published.endpoint;
        if (!patched(CLUSTERTREE_PATCH)) {
          // Replaying a run from before clusterTree: it rested here (upgraded when it wakes).
          await report('Initialized', 'ControlPlaneReady', `control plane serving at ${endpoint}`);
          return;
        }
        void report('Initialized', 'ControlPlaneReady', `control plane serving at ${endpoint}`);
      } else {
        if (!allocation) return;
        step = { ref, allocation };
      }
      // This pass starts no controller-manager: the tenant's runs as it was started, and may judge
      // its nodes itself (from before ADR 12 decision 19), so clusterTree leaves that to it.
      const treeInput: DeployClusterTreeInput =
        from === 'clusterTree' ? { ...step, nodeHealthFromHost: false } : step;
      await run('deployClusterTree', () => steps.deployClusterTree(treeInput));
      const result = await run('promoteResources', () =>
        promotion.promoteResources({ ...step, promote: spec.promoteResources }),
      );
      lastActiveAt = Date.now(); // provisioned: idle from here, not from the workflow's start
      await ready(result);
    } catch (err) {
      if (err instanceof DeleteRequested) return; // the main loop tears down
      const f = describeFailure(err);
      log.warn('provisioning failed; compensating', { reason: f.reason, message: f.message });
      await report('Preparing', 'Compensating', `undoing completed steps after: ${f.message}`);
      await compensate(false);
      await report('Failed', f.reason, f.message);
    }
  }

  /** Records what promotion achieved: status.promoted, the NodesPromoted condition, phase Ready. */
  function ready(result: PromotionResult): Promise<void> {
    appliedPromotion = JSON.stringify(spec.promoteResources ?? {});
    promoted = {
      nodes: result.nodes,
      nodeCount: result.nodes.length,
      pending: result.pending,
      cpu: result.capacity.cpu,
      memory: result.capacity.memory,
    } satisfies PromotedStatus;
    const what = `${result.nodes.length} node(s)${result.virtualNode ? ' and a virtual node' : ''}`;
    if (result.pending.length === 0) {
      setCondition(
        'NodesPromoted',
        true,
        'Promoted',
        `${what} promoted (${promoted.cpu} CPU, ${promoted.memory})`,
      );
    } else {
      const reasons = [...new Set(result.pending.map((p) => p.reason))];
      setCondition(
        'NodesPromoted',
        false,
        reasons.length === 1 ? reasons[0]! : 'NodesPending',
        `${what} promoted; waiting for: ${result.pending.map((p) => p.message).join('; ')}`,
      );
    }
    return report('Ready', 'Ready', `serving at ${endpoint}; ${what} promoted`);
  }

  /** A resize while Ready: the tenant keeps serving whatever happens here. */
  async function repromote(why: string): Promise<void> {
    promotionRetryAt = undefined; // the next try, if one is needed, a full period after this one
    if (!allocation) return;
    void report('Ready', 'Resizing', why);
    try {
      await ready(await promotion.promoteResources({ ref, allocation, promote: spec.promoteResources }));
    } catch (err) {
      if (deleteRequested) return;
      const f = describeFailure(err);
      appliedPromotion = undefined;
      setCondition('NodesPromoted', false, f.reason, `resize failed, will retry: ${f.message}`);
      await report('Ready', 'ResizeFailed', f.message);
    }
  }

  /**
   * spec.sleep: every process of the tenant stops; its data, nodes and host pods stay. A failure
   * leaves it Sleeping with reason SleepFailed (the retry signal, or asking for the other state,
   * tries again):
   * a tenant that has been Ready is never provisioned, or compensated, again.
   */
  async function sleepTenant(): Promise<void> {
    autoRetryAt = undefined;
    const idle = idleAsleep && spec.sleep !== true;
    await report(
      'Sleeping',
      'FallingAsleep',
      idle
        ? `stopping the tenant: no request for ${spec.autoSleep?.idleAfter ?? '?'}`
        : 'stopping the tenant (spec.sleep: true)',
    );
    for (const s of PROCESS_STEPS) {
      stepState.set(s, { state: 'pending' });
      setCondition(STEP_CONDITIONS[s], false, 'Asleep', 'stopped while the tenant sleeps');
    }
    try {
      await steps.sleepTenant({ ref });
    } catch (err) {
      if (deleteRequested) return;
      const f = describeFailure(err);
      if (idle) autoRetryAt = Date.now() + AUTO_RETRY_MS;
      await report(
        'Sleeping',
        'SleepFailed',
        `stopping the tenant failed (${idle ? 'tried again in a minute; ' : ''}the retry signal tries again): ${f.message}`,
      );
      return;
    }
    if (idle) {
      const why = `no request for ${spec.autoSleep?.idleAfter ?? '?'}: its processes are stopped and its data kept; ${spec.autoSleep?.wakeOnRequest === false ? 'a spec change wakes it' : 'the first request (or a spec change) wakes it'}`;
      // Listening for the first request: the listener says Idle once it listens.
      if (spec.autoSleep?.wakeOnRequest !== false && allocation !== undefined && patched(LISTEN_PATCH))
        announce = settle('Sleeping', 'Idle', why);
      else await report('Sleeping', 'Idle', why);
    } else
      await report(
        'Sleeping',
        'Asleep',
        'its processes are stopped and its data kept; spec.sleep: false wakes it',
      );
  }

  /**
   * spec.sleep back to false: the processes start again on the same data, then Ready. A failure
   * leaves it Sleeping with reason WakeFailed, nothing undone; the retry signal tries again.
   */
  async function wakeTenant(): Promise<void> {
    autoRetryAt = undefined;
    if (!allocation) {
      // Not Failed: a retry from Failed provisions, and compensation would delete the data.
      await report('Sleeping', 'WakeFailed', 'cannot wake: the tenant has no allocation recorded');
      return;
    }
    const step: StepInput = { ref, allocation };
    await report('Sleeping', 'Waking', 'starting the tenant again');
    let current: StepName | undefined;
    try {
      for (const s of PROCESS_STEPS) {
        if (deleteRequested) return;
        current = s;
        stepState.set(s, { state: 'running' });
        if (s === 'deployClusterTree') await steps.deployClusterTree(step);
        else await steps[s as 'startEtcd'](step);
        stepState.set(s, { state: 'done' });
        setCondition(STEP_CONDITIONS[s], true, 'Succeeded', `${s} done`);
      }
      current = 'promoteResources';
      stepState.set(current, { state: 'running' });
      const promotedNow = await promotion.promoteResources({ ...step, promote: spec.promoteResources });
      stepState.set(current, { state: 'done' });
      lastActiveAt = Date.now();
      autoRetryAt = undefined;
      await ready(promotedNow);
    } catch (err) {
      if (deleteRequested) return;
      const f = describeFailure(err);
      if (current) {
        stepState.set(current, { state: 'failed', message: f.message });
        setCondition(STEP_CONDITIONS[current], false, f.reason, f.message);
      }
      // Woken for use (auto sleep): nobody may be there to send the retry signal; try again.
      if (spec.autoSleep) autoRetryAt = Date.now() + AUTO_RETRY_MS;
      await report(
        'Sleeping',
        'WakeFailed',
        `waking the tenant failed (${spec.autoSleep ? 'tried again in a minute; ' : ''}the retry signal tries again): ${f.message}`,
      );
    }
  }

  /** Before any certificate is issued: the etcd data, CAs and service-account key of a backup. */
  async function restoreFrom(backup: string, step: StepInput): Promise<void> {
    void report('Preparing', 'Provisioning', `restoring backup ${backup}`);
    try {
      const r = await steps.restoreBackup({ ...step, backup });
      setCondition('BackupRestored', true, 'Restored', `restored ${backup} (${r.source} at ${r.createdAt})`);
    } catch (err) {
      const f = describeFailure(err);
      setCondition('BackupRestored', false, f.reason, f.message);
      throw err;
    }
  }

  /** Makes the Temporal schedule what spec.backup says; a failure is shown and tried again later. */
  async function scheduleBackups(): Promise<void> {
    try {
      await steps.ensureBackupSchedule({ ref, backup: spec.backup ?? null });
      appliedBackup = spec.backup ? JSON.stringify(spec.backup) : undefined;
      if (spec.backup)
        setCondition(
          'BackupScheduled',
          true,
          'Scheduled',
          `backups ${spec.backup.schedule}, the last ${spec.backup.retention ?? 7} kept`,
        );
      else conditions.delete('BackupScheduled');
    } catch (err) {
      if (deleteRequested) return;
      const f = describeFailure(err);
      backupRetryAfter = Date.now() + CERTIFICATE_RETRY_MS;
      setCondition('BackupScheduled', false, f.reason, `${f.message} (tried again in a minute)`);
    }
    await report(phase, reason, message);
  }

  function setCertificateCondition(): void {
    if (!certs) return;
    const c = certificateCondition(certs, Date.now(), certificateFailure);
    setCondition('CertificatesValid', c.ok, c.reason, c.message);
  }

  /**
   * Renews the leaves, or starts or ends a CA rotation, while the tenant keeps its phase: a
   * failure is shown in CertificatesValid and tried again later, never compensated.
   */
  async function maintainCertificates(work: CertificateAction): Promise<void> {
    if (!allocation || !certs) return;
    setCondition(
      'CertificatesValid',
      Date.now() < Date.parse(certs.notAfter),
      work.action === 'renew' ? 'Renewing' : work.action === 'rotateCA' ? 'RotatingCA' : 'RetiringCA',
      work.action === 'renew'
        ? 'renewing every leaf certificate'
        : work.action === 'rotateCA'
          ? `rotating the CA (rotation ${work.generation})`
          : 'retiring the previous CA',
    );
    void report(phase, reason, message);
    try {
      const renewed = await steps.renewCertificates({
        ref,
        allocation,
        spec,
        ...work,
      });
      // The overlap's end stays while the previous CA does (a set from before it was recorded).
      const retiresAt = renewed.previousCAFingerprint ? certs.previousCARetiresAt : undefined;
      certs =
        !renewed.previousCARetiresAt && retiresAt ? { ...renewed, previousCARetiresAt: retiresAt } : renewed;
      appliedCertificatePolicy = certificatePolicy(spec);
      certificateFailure = undefined;
      certificateTiming.renewNotBefore = Date.now() + RENEWAL_SPACING_MS;
    } catch (err) {
      if (deleteRequested) return;
      const f = describeFailure(err);
      certificateFailure = `${work.action} failed (${f.reason}), tried again in a minute: ${f.message}`;
      certificateTiming.retryAfter = Date.now() + CERTIFICATE_RETRY_MS;
    }
    setCertificateCondition();
    await report(phase, reason, message);
  }

  async function teardown(): Promise<VirtualClusterWorkflowResult> {
    await report('Deleting', 'Deleting', 'tearing the tenant down');
    // The schedule goes; the backups stay (restoring a deleted tenant is what they are for).
    // Also when spec.backup is set but no schedule was recorded (a run re-created only to tear
    // down, an attempt whose result was lost): a schedule that is not there is no error.
    if ((appliedBackup !== undefined || spec.backup !== undefined) && patched(BACKUP_PATCH))
      await CancellationScope.nonCancellable(() => undo.ensureBackupSchedule({ ref, backup: null }));
    const id = allocation?.id;
    await compensate(true);
    log.info('tenant torn down', { tenant: id });
    return { tornDown: true, ...(id ? { tenantId: id } : {}) };
  }

  // A new workflow provisions; a run continued-as-new is already Ready or Failed (or Initialized,
  // carried from a run before clusterTree: upgraded below).
  if (phase !== 'Ready' && phase !== 'Failed' && phase !== 'Initialized' && phase !== 'Sleeping')
    await provision();

  for (;;) {
    if (deleteRequested) return teardown();
    const maintained = phase === 'Ready' || phase === 'Sleeping';
    // A run from before renewal learns once when its certificates expire (a new command: patched).
    if (maintained && !certs && !certificatesInspected && allocation && patched(CERTIFICATES_PATCH)) {
      certificatesInspected = true; // once per run: a failure is not retried in a loop
      try {
        certs = await steps.inspectCertificates({ ref, allocation, spec });
        appliedCertificatePolicy = certificatePolicy(spec);
        setCertificateCondition();
        await report(phase, reason, message);
      } catch (err) {
        log.warn('cannot read the certificates', { message: describeFailure(err).message });
      }
      continue;
    }
    // Before sleep and wake: a tenant whose certificates expired while asleep wakes renewed.
    const certificatesDue =
      maintained && certs
        ? certificateWork(certs, spec, appliedCertificatePolicy, Date.now(), certificateTiming)
        : undefined;
    if (certificatesDue) {
      await maintainCertificates(certificatesDue);
      continue;
    }
    // spec.backup is absent in every run from before backups, and so is appliedBackup: no command.
    const backupWanted = spec.backup ? JSON.stringify(spec.backup) : undefined;
    const backupPending = maintained && backupWanted !== appliedBackup;
    if (backupPending && Date.now() >= backupRetryAfter && patched(BACKUP_PATCH)) {
      await scheduleBackups();
      continue;
    }
    // spec.sleep is absent in every run from before sleep existed, and no such run is Sleeping:
    // nothing changes for them. A failed sleep or wake waits for the retry signal (no hot loop),
    // unless the spec now asks for the other state.
    // spec.autoSleep: no request for idleAfter (the tenant's audit log says when the last came).
    const idleMs =
      spec.autoSleep && spec.sleep !== true ? parseDuration(spec.autoSleep.idleAfter) : undefined;
    if (phase === 'Ready' && idleMs !== undefined && allocation && Date.now() >= lastActiveAt + idleMs) {
      try {
        const last = await steps.lastTenantRequest({ ref, allocation });
        if (last.at) lastActiveAt = Math.max(lastActiveAt, Date.parse(last.at));
        // An API server without the audit log (started by an older version) cannot tell: in use.
        if (!last.audited) lastActiveAt = Date.now();
      } catch (err) {
        lastActiveAt = Date.now(); // look again after another idleAfter
        log.warn('cannot tell when the tenant was last used', { message: describeFailure(err).message });
      }
      if (Date.now() >= lastActiveAt + idleMs) {
        idleAsleep = true;
        await sleepTenant();
      }
      continue;
    }
    if (phase === 'Sleeping' && autoRetryAt !== undefined && Date.now() >= autoRetryAt) {
      autoRetryAt = undefined;
      if (reason === 'WakeFailed' && spec.sleep !== true) {
        idleAsleep = false;
        await wakeTenant();
        continue;
      }
      if (reason === 'SleepFailed' && idleAsleep) {
        await sleepTenant();
        continue;
      }
    }
    // Asked to sleep by the spec while asleep for idleness: the same sleep, another way out.
    if (phase === 'Sleeping' && reason === 'Idle' && spec.sleep === true) {
      idleAsleep = false;
      await report(
        'Sleeping',
        'Asleep',
        'its processes are stopped and its data kept; spec.sleep: false wakes it',
      );
      continue;
    }
    const asleepWanted = spec.sleep === true || idleAsleep;
    if (
      (phase === 'Ready' && asleepWanted) ||
      (phase === 'Sleeping' && asleepWanted && reason === 'WakeFailed')
    ) {
      await sleepTenant();
      continue;
    }
    if (phase === 'Sleeping' && !asleepWanted && reason !== 'WakeFailed') {
      await wakeTenant();
      continue;
    }
    // A tenant provisioned before clusterTree existed gets it now.
    if (phase === 'Initialized' && patched(CLUSTERTREE_PATCH)) await provision('clusterTree');
    if (deleteRequested) continue;
    const wake = () =>
      deleteRequested ||
      retryRequested ||
      checkCertificates ||
      pendingSpec !== undefined ||
      workflowInfo().continueAsNewSuggested;
    // Named nodes missing or taken, or a failed resize: look again from time to time.
    // Certificates: when due.
    const retryPromotion = phase === 'Ready' && promotionIncomplete();
    if (!retryPromotion) promotionRetryAt = undefined;
    else if (promotionRetryAt === undefined || !patched(PROMOTION_DEADLINE_PATCH))
      promotionRetryAt = Date.now() + (input.promotionRetryMs ?? DEFAULT_PROMOTION_RETRY_MS);
    const promotionAt = retryPromotion ? promotionRetryAt : undefined;
    const certificatesAt = maintained && certs ? certificateDeadline(certs, certificateTiming) : undefined;
    const idleAt = phase === 'Ready' && idleMs !== undefined ? lastActiveAt + idleMs : undefined;
    // Asleep for idleness: the first request wakes it (an activity listens on its port meanwhile).
    const listen =
      phase === 'Sleeping' &&
      reason === 'Idle' &&
      idleAsleep &&
      spec.autoSleep?.wakeOnRequest !== false &&
      allocation !== undefined;
    const timeouts = [
      ...(idleAt !== undefined ? [Math.max(1, idleAt - Date.now())] : []),
      ...(listen && Date.now() < requestWaitRetryAfter ? [requestWaitRetryAfter - Date.now()] : []),
      ...(phase === 'Sleeping' && autoRetryAt !== undefined ? [Math.max(1, autoRetryAt - Date.now())] : []),
      ...(promotionAt !== undefined ? [Math.max(1, promotionAt - Date.now())] : []),
      ...(certificatesAt !== undefined ? [Math.max(1, certificatesAt - Date.now())] : []),
      ...(backupPending ? [Math.max(1, backupRetryAfter - Date.now())] : []),
    ];
    let request:
      | {
          arrived: boolean;
          failed: boolean;
          cancelled: boolean;
          done: Promise<void>;
          scope: CancellationScope;
        }
      | undefined;
    const listening = listen && allocation !== undefined && Date.now() >= requestWaitRetryAfter;
    // An Idle status no listener is about to write: written here.
    const announced = announce;
    announce = undefined;
    if (announced && !listening) await write(announced);
    if (listening && allocation) {
      const scope = new CancellationScope();
      const r = { arrived: false, failed: false, cancelled: false, scope, done: Promise.resolve() };
      const step: StepInput & { announce?: StatusReport } = {
        ref,
        allocation,
        ...(announced ? { announce: announced.status } : {}),
      };
      r.done = scope
        .run(() => waits.awaitTenantRequest(step))
        .then(
          () => void (r.arrived = true),
          () => void (r.failed = !r.cancelled),
        );
      request = r;
    }
    const woken = () => wake() || request?.arrived === true || request?.failed === true;
    const fired =
      timeouts.length === 0
        ? (await condition(woken), false)
        : !(await condition(woken, Math.min(...timeouts)));
    if (request && !request.arrived && !request.failed) {
      // Waits until the listener is closed: waking must find the port free.
      request.cancelled = true;
      request.scope.cancel();
      await request.done;
    }
    // A listener that ended without a request may not have written its Idle status: written
    // again (the same status), before anything that follows reports another.
    if (announced && request && !request.arrived) await write(announced);
    if (request?.arrived) {
      idleAsleep = false;
      await wakeTenant();
      continue;
    }
    if (request?.failed && !deleteRequested) requestWaitRetryAfter = Date.now() + 30_000;
    if (fired) {
      // When the retry is due: the timer that fired may be another (an idle check, certificates,
      // backups), and then the retry keeps its time (since PROMOTION_DEADLINE_PATCH).
      if (promotionAt !== undefined && Date.now() >= promotionAt)
        await repromote(
          !promotionApplied()
            ? 'applying spec.promoteResources again'
            : 'promoting the nodes that were not available',
        );
      continue;
    }
    if (deleteRequested) continue;
    checkCertificates = false; // handled at the top of the loop
    if (pendingSpec) {
      const change = pendingSpec;
      pendingSpec = undefined;
      // A spec change wakes a tenant asleep for idleness and counts as use, and retries a Failed
      // one; a new generation that only carries the operator's own spec.kubeconfig write
      // (publish, unpublish, a renewal) is no change.
      const changed =
        JSON.stringify(change.spec) !== JSON.stringify(spec) &&
        (!sameDesiredSpec(change.spec, spec) || !patched(SPEC_DEFAULTS_PATCH));
      if (changed) {
        idleAsleep = false;
        lastActiveAt = Date.now();
      }
      const previous = spec;
      spec = change.spec;
      generation = change.generation;
      if (phase === 'Failed' && (changed || !patched(SPEC_RETRY_PATCH))) retryRequested = true;
      else if (
        phase === 'Ready' &&
        !promotionApplied() &&
        // Unchanged after a failed resize: the retry timer tries it again.
        (!samePromotion(spec, previous) || !patched(RESIZE_ON_CHANGE_PATCH))
      )
        await repromote('applying the new spec.promoteResources');
      else await report(phase, reason, message); // records observedGeneration
    }
    if (retryRequested) {
      retryRequested = false;
      if (phase === 'Failed') await provision();
      else if (phase === 'Sleeping' && reason === 'SleepFailed') await sleepTenant();
      else if (phase === 'Sleeping' && reason === 'WakeFailed') await wakeTenant();
    }
    if (workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      // The next run listens without announcing: an Idle status not yet written goes now.
      if (announce) await write(announce);
      announce = undefined;
      await statusWrites.written();
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
        ...(promoted ? { promoted } : {}),
        ...(appliedPromotion !== undefined ? { appliedPromotion } : {}),
        ...(certs ? { certificates: certs } : {}),
        ...(appliedCertificatePolicy !== undefined ? { appliedCertificatePolicy } : {}),
        ...(appliedBackup !== undefined ? { appliedBackup } : {}),
        ...(idleAsleep ? { idleAsleep } : {}),
        ...(spec.autoSleep ? { lastActiveAt: new Date(lastActiveAt).toISOString() } : {}),
      };
      await continueAsNew<typeof virtualClusterWorkflow>({ ...input, spec, generation, carried: next });
    }
  }
}
