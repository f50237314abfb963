/**
 * The VirtualCluster workflow's messages, search attributes and input. Declared once, here;
 * the watcher, the CLI and tests import them from this module.
 */
import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { Condition, Phase, VirtualClusterRef, VirtualClusterSpec } from '../api/virtualCluster.js';
import type { CertificateState, PromotedStatus, TenantAllocation } from '../activities/types.js';

export const TASK_QUEUE = 'kosmos-vc';

/** The spec without spec.kubeconfig, which is output and a credential: never in history. */
export type DesiredSpec = Omit<VirtualClusterSpec, 'kubeconfig'>;

export interface SpecChange {
  spec: DesiredSpec;
  generation: number;
}

export const specChangedSignal = defineSignal<[SpecChange]>('specChanged');
export const deleteRequestedSignal = defineSignal('deleteRequested');
/** Provision again after phase Failed (also offered in the Temporal Web UI's signal dialog). */
export const retrySignal = defineSignal('retry');
/**
 * Look at the certificates now: the watcher sends it once to a tenant whose status has no
 * certificate expiry (a run from before renewal, waiting without a timer).
 */
export const checkCertificatesSignal = defineSignal('checkCertificates');

export const STEP_NAMES = [
  'allocate',
  'issueCertificates',
  'startEtcd',
  'startApiserver',
  'startControllerManager',
  'startScheduler',
  'publishKubeconfig',
  'deployClusterTree',
  'promoteResources',
] as const;
export type StepName = (typeof STEP_NAMES)[number];
export type StepState = 'pending' | 'running' | 'done' | 'failed' | 'undone';

export interface Progress {
  phase: Phase;
  generation: number;
  message: string;
  steps: { name: StepName; state: StepState; message?: string }[];
  allocation?: TenantAllocation;
}
export const progressQuery = defineQuery<Progress>('progress');

export const searchAttributes = {
  namespace: defineSearchAttributeKey('VirtualClusterNamespace', 'KEYWORD'),
  name: defineSearchAttributeKey('VirtualClusterName', 'KEYWORD'),
  phase: defineSearchAttributeKey('VirtualClusterPhase', 'KEYWORD'),
};

/** What a workflow run carries into the next after continueAsNew. */
export interface CarriedState {
  phase: Phase;
  reason: string;
  message: string;
  allocation?: TenantAllocation;
  started: StepName[];
  conditions: Condition[];
  endpoint?: string;
  promoted?: PromotedStatus;
  /** spec.promoteResources as last applied (JSON), to tell a resize from any other change. */
  appliedPromotion?: string;
  /** When the certificates expire and fall due (absent in runs from before renewal). */
  certificates?: CertificateState;
  /** spec.certificates' validity and renewBefore as last applied (JSON). */
  appliedCertificatePolicy?: string;
  /** spec.backup as the Temporal schedule last had it (JSON); absent: no schedule was made. */
  appliedBackup?: string;
  /** Asleep because idle (spec.autoSleep), not because spec.sleep asks. */
  idleAsleep?: boolean;
  /** The last request (or wake-up) known, for spec.autoSleep (ISO 8601). */
  lastActiveAt?: string;
}

export interface VirtualClusterWorkflowInput {
  ref: VirtualClusterRef;
  spec: DesiredSpec;
  generation: number;
  /** False when the Temporal service has no kosmos-vc search attributes registered. */
  searchAttributes: boolean;
  /** How often promotion is tried again while named nodes are missing or taken (default 30 s). */
  promotionRetryMs?: number;
  carried?: CarriedState;
}

export interface VirtualClusterWorkflowResult {
  tornDown: true;
  tenantId?: string;
}

/** One workflow per VirtualCluster object: a re-created object (new uid) gets a new one. */
export function workflowIdFor(ref: VirtualClusterRef): string {
  return `virtualcluster/${ref.namespace}/${ref.name}/${ref.uid}`;
}

/** The inverse of workflowIdFor; undefined for any other id. */
export function refFromWorkflowId(id: string): VirtualClusterRef | undefined {
  const parts = id.split('/');
  if (parts.length !== 4 || parts[0] !== 'virtualcluster') return undefined;
  const [, namespace, name, uid] = parts as [string, string, string, string];
  return namespace && name && uid ? { namespace, name, uid } : undefined;
}
