/**
 * One backup of one VirtualCluster: what its Temporal schedule starts (spec.backup) and what
 * `kosmos-vc backup` starts. A workflow, not a bare activity, so every backup has a history in
 * the Web UI next to the tenant's own workflow.
 */
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import type { BackupResult } from '../activities/backup.js';
import { steps } from './activities.js';

export interface BackupWorkflowInput {
  ref: VirtualClusterRef;
  kind: 'manual' | 'scheduled';
  /** Scheduled backups kept (older ones are deleted after a new one is written). */
  retention?: number;
}

/** The backup written, or why a scheduled one was skipped (a sleeping tenant). */
export async function backupWorkflow(
  input: BackupWorkflowInput,
): Promise<BackupResult | { skipped: string }> {
  return steps.backupTenant(input);
}
