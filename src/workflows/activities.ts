/**
 * Every proxyActivities call of the workflows, grouped by timeout and retry profile.
 */
import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';

/** Transient errors retry with backoff, then the step fails. */
const STEP_RETRY = {
  initialInterval: '1 second',
  backoffCoefficient: 2,
  maximumInterval: '30 seconds',
  maximumAttempts: 5,
};

/** Provisioning steps: transient errors retry with backoff, then the step fails. */
export const steps = proxyActivities<Activities>({
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '10 seconds',
  retry: STEP_RETRY,
});

/**
 * etcd's and the API server's steps, run at once where control planes are processes (ADR 12,
 * decision 22): when one fails the other is cancelled (it stops waiting and starts nothing more),
 * and the workflow goes on only once it has ended, so that compensation never races a start.
 */
export const startingAtOnce = proxyActivities<Pick<Activities, 'startEtcd' | 'startApiserver'>>({
  startToCloseTimeout: '5 minutes',
  // A cancellation reaches the activity with a heartbeat: every 2 s (withHeartbeats).
  heartbeatTimeout: '10 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: STEP_RETRY,
});

/**
 * Promotion waits until the tenant shows every promoted node: thousands take minutes, and the
 * wait ends when their number stops growing (src/activities/wait.ts), so its attempts are not
 * cut at 5 minutes. A dead worker is still found by the heartbeat.
 */
export const promotion = proxyActivities<Pick<Activities, 'promoteResources'>>({
  startToCloseTimeout: '1 hour',
  heartbeatTimeout: '10 seconds',
  retry: STEP_RETRY,
});

/** Compensations and teardown must finish eventually: they retry until they succeed. */
export const undo = proxyActivities<
  Pick<
    Activities,
    | 'release'
    | 'stopComponent'
    | 'unpublishKubeconfig'
    | 'removeClusterTree'
    | 'demoteAll'
    | 'ensureBackupSchedule'
  >
>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** Status writes are cheap and retried without limit. */
export const status = proxyActivities<Pick<Activities, 'reportStatus'>>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '20 seconds' },
});

/**
 * Waits that last as long as a tenant sleeps (the first request to an idle tenant): heartbeats
 * tell a dead worker from a long wait; cancelled when the workflow wakes for another reason.
 */
export const waits = proxyActivities<Pick<Activities, 'awaitTenantRequest'>>({
  startToCloseTimeout: '3650 days',
  // A cancellation reaches the activity with a heartbeat: workers send them at least every 2 s
  // (maxHeartbeatThrottleInterval), well inside this.
  heartbeatTimeout: '10 seconds',
  // The workflow goes on only once the activity has stopped listening on the tenant's port.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '1 minute',
    maximumAttempts: 5,
  },
});
