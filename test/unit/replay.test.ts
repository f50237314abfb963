/**
 * Replays a recorded history of the VirtualCluster workflow (provision, then delete) against
 * today's workflow code. A change that would break running workflows fails here: make it
 * behind `patched()` or record a new history on purpose.
 */
import { Worker } from '@temporalio/worker';
import { readFile } from 'node:fs/promises';
import { expect, it } from 'vitest';
import { installTemporalRuntime, workflowBundle } from '../../src/worker/operator.js';

it('replays a recorded provision-and-delete history without nondeterminism', async () => {
  installTemporalRuntime();
  const history = JSON.parse(
    await readFile(
      new URL('../fixtures/virtualcluster-provision-delete.history.json', import.meta.url),
      'utf8',
    ),
  ) as unknown;
  await expect(
    Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, 'replayed-virtualcluster'),
  ).resolves.toBeUndefined();
});
