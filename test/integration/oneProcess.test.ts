/**
 * A tenant whose API server, controller-manager and scheduler run as one process of
 * kube-control-plane (the default, KOSMOS_VC_ONE_PROCESS; ADR 12, decisions 16 and 21), on real
 * components: two processes (etcd and it), a cluster that works (service accounts made, a pod
 * bound to the promoted node), certificate renewal restarting nothing (the same process works
 * past the expiry of the leaves it started with), a CA rotation replacing it at each step, sleep
 * and wake, an operator with KOSMOS_VC_ONE_PROCESS=false taking the tenant over (its renewal
 * keeps the one process, a wake starts the components apart), and nothing left after deletion.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  deleteVirtualCluster,
  eventually,
  host,
  kosmosVc,
  kubectl,
  newStateDir,
  processesMentioning,
  refOf,
  setSleep,
  tenantKubeconfig,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

const CONTROL_PLANE = [
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kube-control-plane',
];

let operator: Operator;
let namespace: string;
let stateDir: string;
let taskQueue: string;

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('oneproc');
  taskQueue = `oneproc-${randomUUID()}`;
  operator = await testOperator({ stateDir, taskQueue, namespace, oneProcess: true });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
});

describe('one process for the control plane', () => {
  it('runs, schedules, renews, sleeps and wakes, and leaves nothing', async () => {
    const created = await createVirtualCluster(namespace, 'one', {
      promoteResources: { resources: { cpu: 1, memory: '2Gi' } },
      certificates: { validity: '3m', renewBefore: '150s', caOverlap: '1m' },
    });
    const vc = await waitForPhase(namespace, 'one', 'Ready');
    const id = tenantId(refOf(created));
    const controlPlane = () =>
      processesMentioning(id)
        .filter((p) => CONTROL_PLANE.includes(p.exe))
        .sort((a, b) => a.exe.localeCompare(b.exe));
    // Read when they are all up (a renewal, every ~30 s here, restarts nothing).
    const ONE = ['etcd', 'kube-control-plane'];
    const running = (exes: string[]) =>
      eventually(`the processes ${exes.join(', ')}`, () => {
        const now = controlPlane();
        return JSON.stringify(now.map((p) => p.exe)) === JSON.stringify(exes) ? now : undefined;
      });
    const first = await running(ONE);

    const kc = await tenantKubeconfig(stateDir, vc);
    // The controller-manager's service-account controller and the scheduler, in the one process.
    await eventually('the default service account', async () =>
      (await kubectl(kc, 'get', 'serviceaccounts', '-n', 'default', '-o', 'name')).includes(
        'serviceaccount/default',
      )
        ? true
        : undefined,
    );
    await kubectl(kc, 'run', 'p', '--image=registry.k8s.io/pause:3.10', '--restart=Never');
    const nodes = await kubectl(kc, 'get', 'nodes', '-o', 'jsonpath={.items[*].metadata.name}');
    await eventually('the pod bound to the promoted node', async () =>
      (await kubectl(kc, 'get', 'pod', 'p', '-o', 'jsonpath={.spec.nodeName}')) === nodes.trim()
        ? true
        : undefined,
    );

    // Renewal restarts nothing: the controller-manager and scheduler re-read their certificate files.
    const before = vc.status!.certificates!.notAfter!;
    const renewed = await eventually(
      'a renewal',
      async () => {
        const now = await host().getVirtualCluster({ namespace, name: 'one' });
        const c = now?.status?.certificates;
        return c?.notAfter && Date.parse(c.notAfter) > Date.parse(before) + 15_000 ? now : undefined;
      },
      150_000,
    );
    expect(renewed.status?.phase).toBe('Ready');
    const after = await running(ONE);
    expect(after.map((p) => p.pid)).toEqual(first.map((p) => p.pid));
    // Leaves last 3 minutes here: each call reads the kubeconfig published last.
    const latest = async () =>
      tenantKubeconfig(stateDir, (await host().getVirtualCluster({ namespace, name: 'one' }))!);
    const works = async (ns: string) => {
      const kc = await latest();
      await kubectl(kc, 'create', 'namespace', ns);
      await eventually(`a service account made in ${ns}`, async () =>
        (await kubectl(kc, 'get', 'serviceaccounts', '-n', ns, '-o', 'name')).includes('default')
          ? true
          : undefined,
      );
      await kubectl(kc, 'run', 'p', '-n', ns, '--image=registry.k8s.io/pause:3.10', '--restart=Never');
      await eventually(`the pod of ${ns} bound to the promoted node`, async () =>
        (await kubectl(kc, 'get', 'pod', 'p', '-n', ns, '-o', 'jsonpath={.spec.nodeName}')) === nodes.trim()
          ? true
          : undefined,
      );
    };
    await works('after-renewal');

    // Past the expiry of the leaves the process started with, the same process still works: its
    // controller-manager makes service accounts and its scheduler binds, with renewed leaves. (The
    // bind is what fails without the reload: the scheduler's requests carry its certificate, the
    // service-account controller's a token its client got while the first leaf was valid.)
    await eventually(
      'the first leaves expired',
      () => (Date.now() > Date.parse(before) + 15_000 ? true : undefined),
      200_000,
    );
    expect((await running(ONE)).map((p) => p.pid)).toEqual(first.map((p) => p.pid));
    await works('after-expiry');
    expect((await running(ONE)).map((p) => p.pid)).toEqual(first.map((p) => p.pid));

    // A CA rotation's two steps restart the process (the controller-manager reads the bundle it
    // gives pods once): pods see the bundle during the overlap, the new CA alone after it.
    const rootCA = async () => {
      const pem = await kubectl(
        await latest(),
        'get',
        'configmap',
        'kube-root-ca.crt',
        '-o',
        'jsonpath={.data.ca\\.crt}',
      );
      return pem.match(/BEGIN CERTIFICATE/g)?.length;
    };
    expect(await rootCA()).toBe(1);
    const said = await kosmosVc(['rotate-ca', `${namespace}/one`, '--timeout', '120']);
    expect(said).toMatch(/done in \d+s: new CA/);
    const overlap = await running(ONE);
    expect(overlap[0]!.pid).toBe(first[0]!.pid);
    expect(overlap[1]!.pid).not.toBe(first[1]!.pid);
    await eventually('the bundle in kube-root-ca.crt', async () =>
      (await rootCA()) === 2 ? true : undefined,
    );
    await eventually(
      'the old CA retired',
      async () => {
        const c = (await host().getVirtualCluster({ namespace, name: 'one' }))?.status?.certificates;
        return c?.caRotation === 1 && !c.previousCAFingerprint ? true : undefined;
      },
      150_000,
    );
    const retired = await running(ONE);
    expect(retired[0]!.pid).toBe(first[0]!.pid);
    expect(retired[1]!.pid).not.toBe(overlap[1]!.pid);
    await eventually('the new CA alone in kube-root-ca.crt', async () =>
      (await rootCA()) === 1 ? true : undefined,
    );
    await works('after-rotation');

    await setSleep(namespace, 'one', true);
    await eventually('asleep', async () => {
      const v = await host().getVirtualCluster({ namespace, name: 'one' });
      return v?.status?.phase === 'Sleeping' && v.status.reason === 'Asleep' ? v : undefined;
    });
    await eventually('no process of the sleeping tenant', () => controlPlane().length === 0);
    await setSleep(namespace, 'one', false);
    await waitForPhase(namespace, 'one', 'Ready');
    await running(ONE);
    expect(await kubectl(await latest(), 'get', 'namespaces', '-o', 'name')).toContain(
      'namespace/after-rotation',
    );
    await works('after-wake');

    // An operator with KOSMOS_VC_ONE_PROCESS=false takes over the running tenant: its renewal
    // keeps what runs (the one process, whose controller-manager still makes service accounts),
    // and a wake starts the components apart.
    await operator.stop({ stopTenants: false });
    operator = await testOperator({ stateDir, taskQueue, namespace, oneProcess: false });
    const woken = (await host().getVirtualCluster({ namespace, name: 'one' }))!;
    const beforeSecond = await running(ONE);
    await eventually(
      'a renewal by the operator without the setting',
      async () => {
        const now = await host().getVirtualCluster({ namespace, name: 'one' });
        const c = now?.status?.certificates;
        return c?.notAfter &&
          Date.parse(c.notAfter) > Date.parse(woken.status!.certificates!.notAfter!) + 15_000
          ? now
          : undefined;
      },
      150_000,
    );
    const afterSecond = await running(ONE);
    expect(afterSecond.map((p) => p.pid)).toEqual(beforeSecond.map((p) => p.pid));
    await works('after-second-renewal');
    await setSleep(namespace, 'one', true);
    await eventually('no process of the sleeping tenant again', () => controlPlane().length === 0);
    await setSleep(namespace, 'one', false);
    await waitForPhase(namespace, 'one', 'Ready');
    await running(['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler']);
    await works('apart');

    await deleteVirtualCluster(namespace, 'one');
    await waitForGone(namespace, 'one');
    await eventually('no process left', () => (controlPlane().length === 0 ? true : undefined));
    // Two renewals, a wait past the first leaves' expiry (3 minutes), a CA rotation (1 minute's
    // overlap), two sleeps and wakes.
  }, 600_000);
});
