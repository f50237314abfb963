/**
 * One clusterTree process for a worker's tenants (ADR 12, decision 13): two tenants are served
 * by the same process, each on its own ports; deleting one leaves the other's tree running and
 * syncing; a worker set to a process per tenant moves a tenant there at its next start (no tenant
 * is ever served twice), and the shared process, started with the worker, ends with its last
 * tenant there.
 */
import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import type { VirtualCluster } from '../../src/api/virtualCluster.js';
import { SHARED_OWNER } from '../../src/runtime/sharedClusterTree.js';
import type { ComponentStatus } from '../../src/runtime/types.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createKwokNodes,
  createNamespace,
  createVirtualCluster,
  deleteNodes,
  deleteVirtualCluster,
  eventually,
  kubectl,
  newStateDir,
  refOf,
  setSleep,
  tenantKubeconfig,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
let stateDir: string;
let taskQueue: string;
/** The shared process, as the worker started it before any tenant. */
let prestarted: number | undefined;
/** The registrations in a shared clusterTree's directory (not its own `.served`). */
const registrations = async (d: string) =>
  (await readdir(d)).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
const suffix = randomUUID().slice(0, 5);
const NODES = [`sh-${suffix}-a`, `sh-${suffix}-b`];

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('shared');
  taskQueue = `shared-${randomUUID()}`;
  await createKwokNodes(NODES);
  operator = await testOperator({ stateDir, taskQueue, namespace });
  prestarted = (await operator.runtime!.list(SHARED_OWNER)).find((c) => c.name === 'clustertree')?.pid;
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
  await deleteNodes(NODES);
});

const idOf = (vc: VirtualCluster) => tenantId(refOf(vc));
async function treeOf(vc: VirtualCluster): Promise<ComponentStatus | undefined> {
  return (await operator.runtime!.list(idOf(vc))).find((c) => c.name === 'clustertree');
}
const argv = async (pid: number) => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
const alive = async (pid: number) =>
  readFile(`/proc/${pid}/stat`, 'utf8').then(
    (s) => !/^[ZX]/.test(s.slice(s.lastIndexOf(')') + 2)),
    () => false,
  );
const statusPort = async (vc: VirtualCluster) =>
  (
    JSON.parse(await readFile(join(stateDir, 'tenants', idOf(vc), 'clustertree', 'config.json'), 'utf8')) as {
      listen: { port: number };
    }
  ).listen.port;
const readyz = (port: number) =>
  fetch(`http://127.0.0.1:${port}/readyz`).then(
    (r) => r.status,
    () => 0,
  );

/** A tenant pod on its promoted node, Running (clusterTree made its host pod and mirrored its status). */
async function podRuns(kubeconfig: string, name: string): Promise<void> {
  await kubectl(kubeconfig, 'run', name, '--image=registry.invalid/any:1', '--restart=Never');
  await eventually(`tenant pod ${name} Running`, async () =>
    (await kubectl(kubeconfig, 'get', 'pod', name, '-o', 'jsonpath={.status.phase}')) === 'Running'
      ? true
      : undefined,
  );
}

describe('a shared clusterTree', () => {
  let a: VirtualCluster;
  let b: VirtualCluster;

  it('starts with the worker and serves two tenants from that process, each on its own ports', async () => {
    expect(prestarted).toBeGreaterThan(0);
    await createVirtualCluster(namespace, 'a', { promoteResources: { nodes: [NODES[0]] } });
    await createVirtualCluster(namespace, 'b', { promoteResources: { nodes: [NODES[1]] } });
    a = await waitForPhase(namespace, 'a', 'Ready');
    b = await waitForPhase(namespace, 'b', 'Ready');
    const [ta, tb] = [await treeOf(a), await treeOf(b)];
    expect(ta?.running && tb?.running).toBe(true);
    expect(ta!.pid).toBe(prestarted);
    expect(tb!.pid).toBe(prestarted);
    expect(ta!.sharedBy).toBe(2);
    expect(
      (await argv(ta!.pid!)).some((x) => x === `--tenants=${join(stateDir, 'clustertree-tenants')}`),
    ).toBe(true);
    const [pa, pb] = [await statusPort(a), await statusPort(b)];
    expect(pa).not.toBe(pb);
    expect([await readyz(pa), await readyz(pb)]).toEqual([200, 200]);
    await podRuns(await tenantKubeconfig(stateDir, a), 'one');
    await podRuns(await tenantKubeconfig(stateDir, b), 'one');
  });

  it('deleting one tenant stops its tree only: the other keeps the process and still syncs', async () => {
    const before = await treeOf(b);
    const pa = await statusPort(a);
    await deleteVirtualCluster(namespace, 'a');
    await waitForGone(namespace, 'a');
    expect(await readyz(pa)).toBe(0);
    expect(await registrations(join(stateDir, 'clustertree-tenants'))).toEqual([`${idOf(b)}.json`]);
    const after = await treeOf(b);
    expect(after?.pid).toBe(before!.pid);
    expect(after?.sharedBy).toBe(1);
    expect((await waitForPhase(namespace, 'b', 'Ready')).status?.phase).toBe('Ready');
    await podRuns(await tenantKubeconfig(stateDir, b), 'two');
  });

  it('a worker set to a process per tenant moves a tenant at its next start; the shared process ends with it', async () => {
    const shared = (await treeOf(b))!.pid!;
    await operator.stop({ stopTenants: false });
    operator = await testOperator({ stateDir, taskQueue, namespace, sharedClusterTree: false });
    await setSleep(namespace, 'b', true);
    await waitForPhase(namespace, 'b', 'Sleeping');
    // Its last tenant gone to sleep, the shared process has stopped.
    // The process ends before the runtime forgets it (its stop polls the pid, then drops the record).
    await eventually(
      'the shared clusterTree to stop and be forgotten',
      async () => !(await alive(shared)) && (await operator.runtime!.list(SHARED_OWNER)).length === 0,
      30_000,
    );
    await setSleep(namespace, 'b', false);
    b = await waitForPhase(namespace, 'b', 'Ready');
    const own = await treeOf(b);
    expect(own?.running).toBe(true);
    expect(own?.sharedBy).toBeUndefined();
    expect(own!.pid).not.toBe(shared);
    expect((await argv(own!.pid!)).some((x) => x.startsWith('--config='))).toBe(true);
    expect(await registrations(join(stateDir, 'clustertree-tenants'))).toEqual([]);
    await podRuns(await tenantKubeconfig(stateDir, b), 'three');
    await deleteVirtualCluster(namespace, 'b');
    await waitForGone(namespace, 'b');
    expect(await alive(own!.pid!)).toBe(false);
  });
});
