/**
 * The VirtualCluster workflow's patch ids (`patched()`): each marks the runs that take a path
 * added after histories of the old one existed. A run whose history was recorded without the
 * marker replays the old path (test/unit/replay.test.ts replays histories recorded on both sides
 * of them). Never rename one: running workflows carry the names.
 */

/** Marks runs that know the clusterTree steps (histories from before replay without them). */
export const CLUSTERTREE_PATCH = 'clustertree-steps';
/** Marks runs that renew certificates (a run from before asks once when they expire). */
export const CERTIFICATES_PATCH = 'certificate-renewal';
/** Marks runs that know backups (restore, schedules): an old worker sharing the queue never made them. */
export const BACKUP_PATCH = 'backup-restore';
/**
 * Marks runs whose Idle status is written by the listener once it listens, not before it is
 * scheduled: a client that reads the listener's Idle and connects finds it listening.
 */
export const LISTEN_PATCH = 'listen-before-idle';
/**
 * Marks runs that start etcd and the API server at once where control planes are processes (ADR
 * 12, decision 22): the API server's start-up overlaps etcd's. A history from before has the two
 * one after the other.
 */
export const TOGETHER_PATCH = 'etcd-apiserver-together';
/**
 * Marks runs that write only the newest of the statuses of one phase waiting for the one being
 * written (ADR 12, decision 22): steps that end within one write's time make one write, not one
 * each; every phase is still written on its way.
 */
export const COALESCE_PATCH = 'status-writes-coalesced';
/**
 * Marks runs in which a new generation retries a Failed tenant only when its spec changed. The
 * operator's own writes of spec.kubeconfig (publish, and unpublish when undoing) each make a
 * generation that the watcher delivers with the same spec: before, a tenant failing for good
 * after publishing provisioned again on each of them, round after round.
 */
export const SPEC_RETRY_PATCH = 'retry-on-spec-change';
/**
 * Marks runs that compare a new generation's spec with the CRD's defaults applied and key order
 * ignored (src/workflows/spec.ts): before, a spec held from before a default existed differed
 * from every later delivery of the same object once, so an idle tenant woke and a Failed one
 * provisioned again.
 */
export const SPEC_DEFAULTS_PATCH = 'spec-compared-with-defaults';
/**
 * Marks runs in which a new generation resizes a Ready tenant only when its
 * spec.promoteResources changed. Before, after a failed resize (appliedPromotion unset) any new
 * generation, the operator's own spec.kubeconfig writes included, tried the resize again at
 * once, saying it applied a new spec.promoteResources; the retry timer already tries it.
 */
export const RESIZE_ON_CHANGE_PATCH = 'resize-on-promotion-change';
/**
 * Marks runs that keep the time of the next promotion retry (named nodes missing, a failed
 * resize) across the loop's other wake-ups within the run (a run continued as new starts the
 * period again). Before, each pass waited a full period again, so wake-ups that came more often
 * than that (a tenant in use checked for idleness every idleAfter, a run of new generations) put
 * the retry off for as long as they came.
 */
export const PROMOTION_DEADLINE_PATCH = 'promotion-retry-deadline';
