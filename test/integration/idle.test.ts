/**
 * spec.autoSleep on real components: requests keep a tenant awake; without them it sleeps
 * (no process of it runs); the first request wakes it and is answered once the API server is up.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  eventually,
  host,
  newStateDir,
  processesMentioning,
  refOf,
  statusAs,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
let stateDir: string;

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('idle');
  operator = await testOperator({ stateDir, taskQueue: `idle-${randomUUID()}`, namespace });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
});

describe('auto sleep', () => {
  it('keeps a used tenant awake, puts an idle one to sleep, and wakes it on its first request', async () => {
    const created = await createVirtualCluster(namespace, 'idler', { autoSleep: { idleAfter: '15s' } });
    const vc = await waitForPhase(namespace, 'idler', 'Ready');
    const dir = join(stateDir, 'tenants', tenantId(refOf(created)));
    const creds = credentialsOf(Buffer.from(vc.spec.kubeconfig!, 'base64').toString());
    const phase = async () => (await host().getVirtualCluster({ namespace, name: 'idler' }))?.status;

    // Used every 3 s for 25 s: longer than idleAfter, and still awake (the same API server).
    // (By default the API server runs in kube-control-plane with its controller-manager and scheduler.)
    const apiserver = () => processesMentioning(dir).find((p) => p.exe === 'kube-control-plane')?.pid;
    const before = apiserver();
    expect(before).toBeDefined();
    const until = Date.now() + 25_000;
    while (Date.now() < until) {
      expect(await statusAs(creds.server, creds.caPem, creds)).toBe(200);
      await new Promise((r) => setTimeout(r, 3_000));
    }
    expect((await phase())?.phase).toBe('Ready');
    expect(apiserver()).toBe(before);

    // Then left alone: asleep, not one process of it running.
    const asleep = await eventually(
      'asleep for idleness',
      async () => {
        const s = await phase();
        return s?.phase === 'Sleeping' && s.reason === 'Idle' ? s : undefined;
      },
      90_000,
    );
    expect(asleep.message).toMatch(/no request for 15s/);
    await eventually('no process of the idle tenant', () => processesMentioning(dir).length === 0);

    // The first request wakes it, and is itself answered once the API server is back. Idle is
    // written once the listener listens, so a client that connects when it reads Idle is never
    // refused (it was: the workflow reported, then listened, and a CI run's request came between).
    const started = Date.now();
    expect(await statusAs(creds.server, creds.caPem, creds)).toBe(200);
    const waited = Date.now() - started;
    expect(waited).toBeGreaterThan(1_000); // it really waited for the tenant to start
    const awake = await waitForPhase(namespace, 'idler', 'Ready');
    expect(awake.status?.apiServerEndpoint).toBe(vc.status?.apiServerEndpoint);
    expect(processesMentioning(dir).map((p) => p.exe)).toEqual(
      expect.arrayContaining(['etcd', 'kube-control-plane']),
    );

    await deleteVirtualCluster(namespace, 'idler');
    await waitForGone(namespace, 'idler');
  });
});
