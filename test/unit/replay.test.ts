/**
 * Replays recorded histories of the VirtualCluster workflow (provision, then delete) against
 * today's workflow code. A change that would break running workflows fails here: make it
 * behind `patched()` and keep the old history, or record a new one on purpose.
 *
 * - v1: recorded before clusterTree existed (the control plane only, resting at Initialized);
 * - current: provision with clusterTree and promotion, then delete;
 * - day2: certificate renewal, a CA rotation and its retirement, a backup schedule, idle sleep
 *   and a wake on the first request, then delete (test/workflows: "a day of operations");
 * - day2.v2: the same, with the Idle status written by the listener (the listen-before-idle patch);
 * - together: provision and delete with steps at once and status writes coalesced (the
 *   etcd-apiserver-together and status-writes-coalesced patches; ADR 12, decision 22);
 * - failed-same-spec: a Failed run (continued-as-new) given a generation with the same spec stays
 *   Failed (the retry-on-spec-change patch), then a changed spec provisions it, then delete;
 * - failed-same-spec.v1: before that patch (recorded with the workflow of 4261eee): a Failed first
 *   run given the same spec at generation 2 provisions again (no failure that time), up to Ready.
 * - resize-failed: a spec from before spec.podSecurity's CRD default; a failed resize, then a
 *   generation that only adds the default and one that changes certSANs (neither tries the
 *   resize: the spec-compared-with-defaults and resize-on-promotion-change patches; the retry's
 *   time kept across them: promotion-retry-deadline), then a new spec.promoteResources, then
 *   delete;
 * - resize-failed.v1: the same before those patches (recorded with the workflow of 743cbf0):
 *   generations 3 and 4 each try the resize again at once;
 * - failed-defaults: a Failed tenant from before spec.podSecurity's default given a generation
 *   that only adds it stays Failed (spec-compared-with-defaults), then delete;
 * - failed-defaults.v1: the same with the workflow of 743cbf0: it provisions again (and fails;
 *   today's code takes that path again through retry-on-spec-change's old path, so this one
 *   would replay without spec-compared-with-defaults too: idle-defaults.v1 is the one that
 *   tells);
 * - idle-defaults: a run continued as new while asleep for idleness, given a generation that
 *   only adds spec.podSecurity's default: it stays asleep, listening again
 *   (spec-compared-with-defaults), then delete;
 * - idle-defaults.v1: the same with the workflow of 743cbf0: the generation wakes it;
 * - promotion-retry: Ready with a named node missing while in use, checked for idleness every
 *   ~2 s: the retry (a 4 s period) comes after two checks, on time (promotion-retry-deadline);
 * - promotion-retry.v1: the same before that patch (the workflow of 144ef9b): each idle check
 *   starts the retry's period again, and no retry comes while the tenant is in use.
 *
 * A `.v1` history was recorded by running its test against the older workflow
 * (`git show <commit>:src/workflows/virtualCluster.ts`), the assertions of the new behaviour
 * replaced by waits for the old; each test names the variable that records the new form.
 */
import { Worker } from '@temporalio/worker';
import { readFile } from 'node:fs/promises';
import { expect, it } from 'vitest';
import { installTemporalRuntime, workflowBundle } from '../../src/worker/operator.js';

it.each([
  'virtualcluster-provision-delete.v1',
  'virtualcluster-provision-delete',
  'virtualcluster-day2',
  'virtualcluster-day2.v2',
  'virtualcluster-provision-delete.together',
  'virtualcluster-failed-same-spec',
  'virtualcluster-failed-same-spec.v1',
  'virtualcluster-resize-failed',
  'virtualcluster-resize-failed.v1',
  'virtualcluster-failed-defaults',
  'virtualcluster-failed-defaults.v1',
  'virtualcluster-idle-defaults',
  'virtualcluster-idle-defaults.v1',
  'virtualcluster-promotion-retry',
  'virtualcluster-promotion-retry.v1',
])(
  'replays the recorded history %s without nondeterminism',
  async (fixture) => {
    installTemporalRuntime();
    const history = JSON.parse(
      await readFile(new URL(`../fixtures/${fixture}.history.json`, import.meta.url), 'utf8'),
    ) as unknown;
    await expect(
      Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, `replayed-${fixture}`),
    ).resolves.toBeUndefined();
  },
  // The first one bundles the workflow code (seconds; more on a loaded machine).
  30_000,
);
