/**
 * The VirtualCluster workflow's status writes. They run one after another, in order, but
 * alongside the steps: a step does not wait for the write that announces it. Callers await the
 * returned promise where the order against later work matters (final phases, before
 * continue-as-new). Since COALESCE_PATCH a write not yet begun is replaced by a newer one of the
 * same phase.
 */
import { CancellationScope, patched } from '@temporalio/workflow';
import type { StatusReport } from '../activities/types.js';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import { status } from './activities.js';
import { COALESCE_PATCH } from './patches.js';

/** One status of one VirtualCluster, as reportStatus writes it. */
export interface StatusSnapshot {
  ref: VirtualClusterRef;
  status: StatusReport;
}

export interface StatusChain {
  /** Queues a write; resolves once it (or a newer write that took its place) is written. */
  write: (snapshot: StatusSnapshot) => Promise<void>;
  /** Settles once every write queued so far has ended: rejected if the last one failed. */
  written: () => Promise<void>;
}

export function statusChain(): StatusChain {
  let chain: Promise<void> = Promise.resolve();
  /** The chain's last write while it has not begun (COALESCE_PATCH). */
  let waiting: { snapshot: StatusSnapshot } | undefined;
  return {
    write: (snapshot) => {
      const coalesce = patched(COALESCE_PATCH);
      // A write of the same phase that has not begun writes this one instead (whoever awaits
      // either is answered once this one is written); every phase is still written on its way.
      if (coalesce && waiting && waiting.snapshot.status.phase === snapshot.status.phase) {
        waiting.snapshot = snapshot;
        return chain;
      }
      const entry = { snapshot };
      if (coalesce) waiting = entry;
      // In no scope of a step's: a step's scope is cancelled when the step beside it fails
      // (together), and a status written later for others (Compensating) may wait behind it or
      // join it.
      chain = chain
        .catch(() => undefined)
        .then(() =>
          CancellationScope.nonCancellable(() => {
            if (waiting === entry) waiting = undefined;
            return status.reportStatus(entry.snapshot);
          }),
        );
      return chain;
    },
    written: () => chain,
  };
}
