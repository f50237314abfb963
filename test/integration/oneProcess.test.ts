/**
 * A tenant whose API server, controller-manager and scheduler run as one process of
 * kube-control-plane (KOSMOS_VC_ONE_PROCESS; ADR 12, decision 16), on real components: two
 * processes (etcd and it), a cluster that works (service accounts made, a pod bound to the
 * promoted node), certificate renewal restarting the one process, sleep and wake, an operator
 * without the setting taking the tenant over (its renewal restarts the one process, a wake starts
 * the components apart), and nothing left after deletion.
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
      certificates: { validity: '3m', renewBefore: '150s' },
    });
    const vc = await waitForPhase(namespace, 'one', 'Ready');
    const id = tenantId(refOf(created));
    const controlPlane = () =>
      processesMentioning(id)
        .filter((p) => CONTROL_PLANE.includes(p.exe))
        .sort((a, b) => a.exe.localeCompare(b.exe));
    // Read when they are all up (a renewal, every ~30 s here, restarts the one process).
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

    // Renewal restarts the process (its controller-manager and scheduler read their kubeconfigs once).
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
    expect(after[0]!.pid).toBe(first[0]!.pid);
    expect(after[1]!.pid).not.toBe(first[1]!.pid);
    const kc2 = await tenantKubeconfig(stateDir, renewed);
    await kubectl(kc2, 'create', 'namespace', 'after-renewal');
    await eventually('a service account made after the renewal', async () =>
      (await kubectl(kc2, 'get', 'serviceaccounts', '-n', 'after-renewal', '-o', 'name')).includes('default')
        ? true
        : undefined,
    );
    const bound = async (pod: string) => {
      await kubectl(kc2, 'run', pod, '--image=registry.k8s.io/pause:3.10', '--restart=Never');
      await eventually(`${pod} bound to the promoted node`, async () =>
        (await kubectl(kc2, 'get', 'pod', pod, '-o', 'jsonpath={.spec.nodeName}')) === nodes.trim()
          ? true
          : undefined,
      );
    };
    await bound('after-renewal');

    await setSleep(namespace, 'one', true);
    await eventually('asleep', async () => {
      const v = await host().getVirtualCluster({ namespace, name: 'one' });
      return v?.status?.phase === 'Sleeping' && v.status.reason === 'Asleep' ? v : undefined;
    });
    await eventually('no process of the sleeping tenant', () => controlPlane().length === 0);
    await setSleep(namespace, 'one', false);
    await waitForPhase(namespace, 'one', 'Ready');
    await running(ONE);
    expect(await kubectl(kc2, 'get', 'namespaces', '-o', 'name')).toContain('namespace/after-renewal');
    await bound('after-wake');

    // An operator without the setting takes over the running tenant: its renewal restarts what
    // runs (the one process, whose controller-manager then makes service accounts again), and a
    // wake starts the components apart.
    await operator.stop({ stopTenants: false });
    operator = await testOperator({ stateDir, taskQueue, namespace });
    const woken = (await host().getVirtualCluster({ namespace, name: 'one' }))!;
    const beforeSecond = await running(ONE);
    const second = await eventually(
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
    expect(afterSecond[1]!.pid).not.toBe(beforeSecond[1]!.pid);
    const kc3 = await tenantKubeconfig(stateDir, second);
    await kubectl(kc3, 'create', 'namespace', 'after-second-renewal');
    await eventually('a service account made after the second renewal', async () =>
      (await kubectl(kc3, 'get', 'serviceaccounts', '-n', 'after-second-renewal', '-o', 'name')).includes(
        'default',
      )
        ? true
        : undefined,
    );
    await setSleep(namespace, 'one', true);
    await eventually('no process of the sleeping tenant again', () => controlPlane().length === 0);
    await setSleep(namespace, 'one', false);
    await waitForPhase(namespace, 'one', 'Ready');
    await running(['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler']);

    await deleteVirtualCluster(namespace, 'one');
    await waitForGone(namespace, 'one');
    await eventually('no process left', () => (controlPlane().length === 0 ? true : undefined));
  });
});
