/**
 * Values that cross between workflows and activities. Types only: workflow code imports this
 * module, so it must stay free of Node built-ins and runtime imports.
 */
import type { Condition, Phase, VirtualClusterRef, VirtualClusterSpec } from '../api/virtualCluster.js';
import type { ControlPlanePorts } from '../runtime/controlPlane.js';

/** What the allocate step produced; every later step works from it. */
export interface TenantAllocation {
  /** Runtime owner id and directory name: <namespace>-<name>-<uid prefix>. */
  id: string;
  dir: string;
  address: string;
  ports: ControlPlanePorts;
  serviceCIDR: string;
  /**
   * Where its control plane runs (ADR 14): absent, the process runtime; `kubernetes`, pods of
   * its host namespace, `address` its API server's Service and `ports` the pods' (the API
   * server's the Service's).
   */
  runtime?: 'kubernetes';
}

export type ControlPlaneComponent = 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kube-scheduler';

/** A node named in spec.promoteResources.nodes that is not (yet) the tenant's, and why. */
export interface PendingNode {
  node: string;
  reason: 'NodeNotFound' | 'NodeOwnedByAnother' | 'ControlPlaneNode' | 'NodeHasWorkloads';
  message: string;
}

/** What promoteResources left in place. */
export interface PromotionResult {
  /** Host nodes the tenant owns now, sorted. */
  nodes: string[];
  pending: PendingNode[];
  /** Nodes handed back by this call. */
  demoted: string[];
  /** The tenant node standing for spec.promoteResources.resources, when there is one. */
  virtualNode: string | null;
  /** Everything promoted: the nodes' allocatable plus the resources. */
  capacity: { cpu: string; memory: string };
}

/** status.promoted: what `kubectl get vc` shows. */
export interface PromotedStatus {
  nodes: string[];
  nodeCount: number;
  pending: PendingNode[];
  cpu: string;
  memory: string;
}

export interface StatusReport {
  phase: Phase;
  reason: string;
  message: string;
  observedGeneration: number;
  conditions: Condition[];
  workflowId: string;
  /** null clears the field (status is merge-patched). */
  apiServerEndpoint: string | null;
  kubeconfigSecretRef: { name: string; key: string } | null;
  promoted: PromotedStatus | null;
  /** Absent: left as it is (runs from before certificate renewal never write it); null clears a field. */
  certificates?:
    | (Omit<CertificateState, 'previousCAFingerprint' | 'previousCARetiresAt'> & {
        previousCAFingerprint: string | null;
        previousCARetiresAt: string | null;
      })
    | null;
}

export interface StepInput {
  ref: VirtualClusterRef;
  allocation: TenantAllocation;
}

export interface DeployClusterTreeInput extends StepInput {
  /**
   * False: the tenant's controller-manager was not started in this pass and may judge its nodes
   * (from before ADR 12 decision 19): clusterTree writes no health taints and renews Leases as a
   * kubelet. Absent: the pass started the current one first.
   */
  nodeHealthFromHost?: false;
}

export interface IssueCertificatesInput extends StepInput {
  spec: Pick<VirtualClusterSpec, 'certSANs' | 'serviceCIDR' | 'certificates'>;
}

/** What the certificate activities change: renew every leaf, or start or end a CA rotation. */
export type CertificateAction =
  { action: 'renew' } | { action: 'rotateCA'; generation: number } | { action: 'retireCA' };

/** When a tenant's certificates expire and are due for renewal (all times ISO 8601); status.certificates. */
export interface CertificateState {
  notAfter: string;
  renewAt: string;
  caNotAfter: string;
  caFingerprint: string;
  caRotation: number;
  previousCAFingerprint?: string;
  /** While a CA rotation overlaps: when the previous CA is retired. */
  previousCARetiresAt?: string;
}

/** Failure types the workflow tells apart (ApplicationFailure.type). */
export const FailureType = {
  ComponentExited: 'ComponentExited',
  /** A component's pod cannot start: its image is not there, its storage cannot change (ADR 14). */
  ComponentNotStarted: 'ComponentNotStarted',
  InvalidSpec: 'InvalidSpec',
  PortsExhausted: 'PortsExhausted',
  ComponentsMissing: 'ComponentsMissing',
  CARotationInProgress: 'CARotationInProgress',
  PkiMissing: 'PkiMissing',
  InvalidBackup: 'InvalidBackup',
  TenantGone: 'TenantGone',
  TenantNotRunning: 'TenantNotRunning',
} as const;

/** The labels of what the operator makes in the host for a tenant. */
export const LABELS = {
  managedBy: 'app.kubernetes.io/managed-by',
  virtualCluster: 'kosmos.io/virtual-cluster',
} as const;
