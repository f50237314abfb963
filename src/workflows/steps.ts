/**
 * What the VirtualCluster workflow knows of its steps beside their order (STEP_NAMES in
 * definitions.ts): the condition each sets, which run a process, which start a component, and
 * how a failure is described.
 */
import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';
import type { ControlPlaneComponent } from '../activities/types.js';
import type { StepName } from './definitions.js';

/** The condition each step sets when it is done. */
export const STEP_CONDITIONS: Record<StepName, string> = {
  allocate: 'Allocated',
  issueCertificates: 'CertificatesIssued',
  startEtcd: 'EtcdReady',
  startApiserver: 'APIServerReady',
  startControllerManager: 'ControllerManagerReady',
  startScheduler: 'SchedulerReady',
  publishKubeconfig: 'KubeconfigPublished',
  deployClusterTree: 'ClusterTreeReady',
  promoteResources: 'NodesPromoted',
};

/** The steps that run a process: they stop while the tenant sleeps and run again to wake it. */
export const PROCESS_STEPS: readonly StepName[] = [
  'startEtcd',
  'startApiserver',
  'startControllerManager',
  'startScheduler',
  'deployClusterTree',
];

/** The steps a tenant from before clusterTree existed has not run (CLUSTERTREE_PATCH). */
export const CLUSTERTREE_STEPS = new Set<StepName>(['deployClusterTree', 'promoteResources']);

/** The component each control-plane step starts. */
export const COMPONENT_OF: Partial<Record<StepName, ControlPlaneComponent>> = {
  startEtcd: 'etcd',
  startApiserver: 'kube-apiserver',
  startControllerManager: 'kube-controller-manager',
  startScheduler: 'kube-scheduler',
};

/** Thrown by a step that would begin after the delete request: provisioning stops there. */
export class DeleteRequested extends Error {
  override readonly name = 'DeleteRequested';
}

/** Reason and message of a failed step, from what the activity threw. */
export function describeFailure(err: unknown): { reason: string; message: string } {
  let cause: unknown = err;
  if (err instanceof ActivityFailure) cause = err.cause ?? err;
  if (cause instanceof ApplicationFailure) {
    return { reason: cause.type ?? 'StepFailed', message: cause.message };
  }
  return { reason: 'StepFailed', message: err instanceof Error ? err.message : String(err) };
}
