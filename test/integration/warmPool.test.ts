/**
 * The warm pool (ADR 12, decision 15) on real components: a new tenant is handed a control plane
 * started ahead, whose processes the steps adopt (none restarts), with its own CAs and an empty
 * etcd; a tenant of another service range provisions as without a pool; sleep and wake stop and
 * start the claimed slot's processes; deleting the tenant removes the slot; the pool refills.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import { TENANT_API_SERVICE } from '../../src/activities/tenantNetwork.js';
import type { TenantAllocation } from '../../src/activities/types.js';
import type { VirtualCluster } from '../../src/api/virtualCluster.js';
import { hostNamespace } from '../../src/clustertree/naming.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  deleteVirtualCluster,
  eventually,
  host,
  kubectl,
  newStateDir,
  pathExists,
  processesMentioning,
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

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('pool');
  operator = await testOperator({
    stateDir,
    taskQueue: `pool-${randomUUID()}`,
    namespace,
    warmPool: { size: 1, refillDelayMs: 0 },
  });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
});

const slotDir = (id: string) => join(stateDir, 'tenants', id);
const allocationOf = async (vc: VirtualCluster): Promise<TenantAllocation> =>
  JSON.parse(
    await readFile(join(stateDir, 'tenants', tenantId(refOf(vc)), 'allocation.json'), 'utf8'),
  ) as TenantAllocation;
const controlPlane = (dir: string) =>
  processesMentioning(dir)
    .filter((p) =>
      ['etcd', 'kube-control-plane', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'].includes(
        p.exe,
      ),
    )
    .sort((a, b) => a.exe.localeCompare(b.exe));

/** The next ready slot other than `not`. */
const readySlot = (not?: string) =>
  eventually(
    'a ready warm-pool slot',
    async () => (await operator.warmPool!.tickets()).find((t) => t !== not),
    120_000,
  );

/** The IP addresses of the certificate an API server serves. */
function servedIPs(port: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const alt = socket.getPeerX509Certificate()?.subjectAltName ?? '';
      socket.end();
      resolve([...alt.matchAll(/IP Address:([0-9.]+)/g)].map((m) => m[1]!));
    });
    socket.on('error', reject);
  });
}

describe('warm pool', () => {
  it('hands new tenants started control planes, each its own, and removes a slot with its tenant', async () => {
    const slot1 = await readySlot();
    const before = controlPlane(slotDir(slot1));
    // By default etcd, and the API server, controller-manager and scheduler in one process.
    expect(before.map((p) => p.exe)).toEqual(['etcd', 'kube-control-plane']);

    const first = await createVirtualCluster(namespace, 'first');
    const firstReady = await waitForPhase(namespace, 'first', 'Ready');
    const a1 = await allocationOf(first);
    expect(a1.id).toBe(slot1);
    // Adopted: the very processes the pool started, none restarted.
    expect(controlPlane(slotDir(slot1))).toEqual(before);
    const kc1 = await tenantKubeconfig(stateDir, firstReady);
    await kubectl(kc1, 'create', 'namespace', 'left-behind');
    if (inject('nodeAddress')) {
      // Its serving certificate was issued again for the tenant's own address: the host Service pods reach it by.
      const svc = await host().core.readNamespacedService({
        name: TENANT_API_SERVICE,
        namespace: hostNamespace(refOf(first)),
      });
      await eventually('the tenant address in the served certificate', async () =>
        (await servedIPs(a1.ports.apiserver)).includes(svc.spec!.clusterIP!),
      );
    }

    // Another service range never takes a slot. With tenant networking it is refused (a tenant
    // Service takes its host Service's ClusterIP, ADR 7); without, provisioned as without a pool.
    const slot2 = await readySlot(slot1);
    const other = await createVirtualCluster(namespace, 'other', { serviceCIDR: '10.100.0.0/16' });
    if (inject('nodeAddress')) {
      const failed = await waitForPhase(namespace, 'other', 'Failed');
      expect(failed.status?.reason).toBe('InvalidSpec');
      expect(failed.status?.message).toMatch(
        /10\.100\.0\.0\/16 .* does not hold the host's service range 10\.96\.0\.0\/12:/,
      );
    } else {
      await waitForPhase(namespace, 'other', 'Ready');
      expect((await allocationOf(other)).id).toBe(tenantId(refOf(other)));
    }
    expect(await operator.warmPool!.tickets()).toContain(slot2);

    // A restore writes a backup's data before etcd starts: it never takes a running slot.
    const restored = await createVirtualCluster(namespace, 'restored', {
      restore: { backup: 'gone/none.tar.gz' },
    });
    const noBackup = await waitForPhase(namespace, 'restored', 'Failed');
    expect(noBackup.status?.reason).toBe('InvalidBackup');
    expect(await operator.warmPool!.tickets()).toContain(slot2);
    await deleteVirtualCluster(namespace, 'restored');
    await waitForGone(namespace, 'restored');
    expect(pathExists(join(stateDir, 'tenants', tenantId(refOf(restored))))).toBe(false);

    // The next tenant gets the next slot: other CAs, an empty etcd.
    const second = await createVirtualCluster(namespace, 'second');
    const secondReady = await waitForPhase(namespace, 'second', 'Ready');
    expect((await allocationOf(second)).id).toBe(slot2);
    expect(secondReady.status?.certificates?.caFingerprint).toBeDefined();
    expect(secondReady.status?.certificates?.caFingerprint).not.toBe(
      firstReady.status?.certificates?.caFingerprint,
    );
    const kc2 = await tenantKubeconfig(stateDir, secondReady);
    expect(await kubectl(kc2, 'get', 'namespaces', '-o', 'name')).not.toContain('left-behind');
    expect(await kubectl(kc1, 'get', 'namespaces', '-o', 'name')).toContain('namespace/left-behind');

    // Sleep stops the claimed slot's processes; waking starts them again.
    await setSleep(namespace, 'second', true);
    await waitForPhase(namespace, 'second', 'Sleeping');
    await eventually('no process of the sleeping tenant', () => controlPlane(slotDir(slot2)).length === 0);
    await setSleep(namespace, 'second', false);
    await waitForPhase(namespace, 'second', 'Ready');
    expect(controlPlane(slotDir(slot2))).toHaveLength(2);

    // Deleting a tenant removes its slot: processes, directory, ports.
    await deleteVirtualCluster(namespace, 'first');
    await waitForGone(namespace, 'first');
    expect(processesMentioning(slotDir(slot1))).toEqual([]);
    expect(pathExists(slotDir(slot1))).toBe(false);
    const ports = JSON.parse(await readFile(join(stateDir, 'ports.json'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(ports)).not.toContain(slot1);
    expect(Object.keys(ports)).toContain(slot2);

    // And the pool made another.
    const slot3 = await readySlot(slot2);
    expect([slot1, slot2]).not.toContain(slot3);
  });

  it("renews a claimed tenant's certificates: the slot's processes keep running, the tenant's clusterTree restarts", async () => {
    // Leaves of 3 minutes renewed 150 s before: issued again at the claim (the slot's last a
    // year), the first renewal 30 s later.
    const slot = await readySlot();
    const created = await createVirtualCluster(namespace, 'short', {
      certificates: { validity: '3m', renewBefore: '150s' },
    });
    const vc = await waitForPhase(namespace, 'short', 'Ready');
    expect((await allocationOf(created)).id).toBe(slot);
    const first = vc.status!.certificates!;
    expect(Date.parse(first.notAfter!) - Date.now()).toBeLessThan(3 * 60_000);
    const pidsOf = () => new Map(controlPlane(slotDir(slot)).map((p) => [p.exe, p.pid]));
    const before = pidsOf();
    const id = tenantId(refOf(created));
    const treeStops = async () =>
      (await operator.runtime!.logTail(id, 'clustertree', 1000))
        .split('\n')
        .filter((l) => l.includes('registration changed; restarting')).length;
    const stopsBefore = await treeStops();

    const renewed = await eventually(
      'a renewal',
      async () => {
        const now = await host().getVirtualCluster({ namespace, name: 'short' });
        const c = now?.status?.certificates;
        return c?.notAfter && Date.parse(c.notAfter) > Date.parse(first.notAfter!) + 15_000 ? now : undefined;
      },
      150_000,
    );
    expect(renewed.status?.phase).toBe('Ready');
    // The slot's etcd and one process, adopted at the claim, run on: the controller-manager and
    // scheduler in it re-read their certificate files (ADR 12, decision 21).
    const after = pidsOf();
    expect([...after.keys()].sort()).toEqual(['etcd', 'kube-control-plane']);
    expect(after).toEqual(before);
    expect(await treeStops()).toBeGreaterThan(stopsBefore);
    const kc = await tenantKubeconfig(stateDir, renewed);
    expect(await kubectl(kc, 'get', 'namespaces', '-o', 'name')).toContain('namespace/default');
    // Its controller-manager still does its work: a new namespace gets its service account.
    await kubectl(kc, 'create', 'namespace', 'after-renewal');
    await eventually('a service account made after the renewal', async () =>
      (await kubectl(kc, 'get', 'serviceaccounts', '-n', 'after-renewal', '-o', 'name')).includes('default')
        ? true
        : undefined,
    );
  });
});
