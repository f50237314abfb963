/**
 * The workflow code bundled once, at `npm run build` (after tsc), into dist/workflow-bundle.js.
 * An operator then loads it by path: bundling at start runs webpack inside the operator, which
 * costs about 2 s and leaves about 46 MiB more RSS after GC (ADR 12).
 *
 *   node dist/src/worker/bundle.js
 */
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { rename, writeFile } from 'node:fs/promises';
import { prebuiltBundlePath, workflowsPath } from './operator.js';

const { code } = await bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('WARN') });
// Written under a temporary name, then renamed: a reader never sees half a bundle.
await writeFile(`${prebuiltBundlePath}.tmp`, code);
await rename(`${prebuiltBundlePath}.tmp`, prebuiltBundlePath);
