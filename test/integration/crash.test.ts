/**
 * A worker SIGKILLed in the middle of provisioning: a new worker finishes the job, adopting the
 * components the dead one started, so the tenant ends with exactly one set of processes.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import type { Operator } from '../../src/worker/operator.js';
import { progressQuery, workflowIdFor } from '../../src/workflows/definitions.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  eventually,
  newStateDir,
  pathExists,
  processesMentioning,
  spawnWorker,
  stopWorker,
  statusAs,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

let watcherOnly: Operator;
let namespace: string;
let stateDir: string;
let taskQueue: string;
const workers: ChildProcess[] = [];

function startWorker(label: string): ChildProcess {
  const child = spawnWorker(stateDir, label, taskQueue, { KOSMOS_VC_ETCD_UNSAFE_NO_FSYNC: 'true' });
  workers.push(child);
  return child;
}

beforeAll(async () => {
  stateDir = await newStateDir();
  taskQueue = `crash-${randomUUID()}`;
  namespace = await createNamespace('crash');
  watcherOnly = await testOperator({ stateDir, taskQueue, namespace, worker: false });
});
afterAll(async () => {
  await watcherOnly?.stop();
  for (const w of workers) await stopWorker(w);
});

describe('worker crash', () => {
  it('finishes provisioning on a new worker with exactly one set of processes', async () => {
    const first = startWorker('first');
    const vc = await createVirtualCluster(namespace, 'survivor');
    const ref = { namespace, name: 'survivor', uid: vc.metadata.uid };
    const handle = watcherOnly.client.workflow.getHandle(workflowIdFor(ref));
    // etcd's step done, the API server's (started at once with it: ADR 12, decision 22) not yet.
    await eventually('the apiserver step to be under way with etcd ready', async () => {
      const p = await handle.query(progressQuery);
      const state = (name: string) => p.steps.find((s) => s.name === name)?.state;
      return state('startEtcd') === 'done' && state('startApiserver') === 'running';
    });
    // The worker's shared clusterTree process, started with it (ADR 12, decision 13).
    const sharedTrees = () => processesMentioning(join(stateDir, 'clustertree-tenants'));
    const [sharedBefore] = sharedTrees();
    expect(sharedBefore?.exe).toBe('node');
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));

    const dir = join(stateDir, 'tenants', tenantId(ref));
    // What the dead worker started keeps running, unsupervised, until a new worker adopts it.
    expect(processesMentioning(dir).map((p) => p.exe)).toContain('etcd');

    startWorker('second');
    const ready = await waitForPhase(namespace, 'survivor', 'Ready', 180_000);
    const creds = credentialsOf(Buffer.from(ready.spec.kubeconfig!, 'base64').toString());
    expect(await statusAs(creds.server, creds.caPem, creds)).toBe(200);
    // One of each control-plane process (etcd, and the API server, controller-manager and
    // scheduler in one); clusterTree in the shared process the dead worker started, adopted, not
    // a second one.
    expect(
      processesMentioning(dir)
        .map((p) => p.exe)
        .sort(),
    ).toEqual(['etcd', 'kube-control-plane']);
    expect(sharedTrees()).toEqual([sharedBefore]);
    const registration = join(stateDir, 'clustertree-tenants', `${tenantId(ref)}.json`);
    expect(pathExists(registration)).toBe(true);

    await deleteVirtualCluster(namespace, 'survivor');
    await waitForGone(namespace, 'survivor');
    expect(processesMentioning(dir)).toEqual([]);
    expect(pathExists(registration)).toBe(false);
  });
});
