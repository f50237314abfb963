/**
 * Where a tenant's control plane lives: `allocate` picks its ports and directory on this machine
 * (ADR 4), its API server's Service for a control plane in pods (ADR 14), or a warm-pool slot
 * started ahead (ADR 12, decision 15); `release` undoes it. The allocation a tenant got is
 * recorded in `tenants/<tenant id>/allocation.json`, and its id is the runtime owner of the
 * control plane: the tenant's own, or the slot's it claimed.
 */
import { ApplicationFailure } from '@temporalio/activity';
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ignoreStatus } from '../api/kubeClient.js';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import { hostNamespace } from '../clustertree/naming.js';
import { POD_PORTS } from '../runtime/controlPlane.js';
import { KeyedLocks } from '../runtime/locks.js';
import { PortsExhaustedError, type PortAllocator } from '../runtime/ports.js';
import type { ControlPlaneRuntime } from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import type { HostCluster } from './hostCluster.js';
import { dnsPortOwner, ensureApiService, TENANT_API_PORT, type TenantNetwork } from './tenantNetwork.js';
import { FailureType, type TenantAllocation } from './types.js';
import { WarmPool } from './warmPool.js';

/** The tenant's id: names its directory, its clusterTree and DNS, and (unless it claimed a slot) its control plane. */
export function tenantId(ref: VirtualClusterRef): string {
  return `${ref.namespace}-${ref.name}-${ref.uid.replace(/-/g, '').slice(0, 8)}`;
}

export const ALLOCATION_FILE = 'allocation.json';
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV']);

export interface AllocationDeps {
  host: HostCluster;
  runtime: ControlPlaneRuntime;
  ports: PortAllocator;
  stateDir: string;
  tenantsDir: string;
  /** The address the process runtime's components listen on. */
  address: string;
  controlPlaneRuntime?: 'process' | 'kubernetes';
  allowPrivilegedTenants?: boolean;
  network?: TenantNetwork;
  /** Refuses what this operator does not make for a new tenant (an exposure it does not allow). */
  admit: (ref: VirtualClusterRef) => Promise<void>;
  warmPool?: { size: number; serviceCIDR: string; refillDelayMs?: number };
  /** Writes a slot's files and starts its control plane as the steps would, ready. */
  startSlot: (a: TenantAllocation, signal: AbortSignal) => Promise<void>;
  logger: Logger;
}

export function createAllocation(deps: AllocationDeps) {
  const { ports, tenantsDir } = deps;
  const log = (ref: VirtualClusterRef) => deps.logger.child({ vc: `${ref.namespace}/${ref.name}` });

  /** What a tenant's id recorded as its allocation on this machine, if anything (a file that cannot be read throws). */
  const recordedAllocation = (id: string): Promise<TenantAllocation | undefined> =>
    readFile(join(tenantsDir, id, ALLOCATION_FILE), 'utf8').then(
      (t) => {
        try {
          return JSON.parse(t) as TenantAllocation;
        } catch (e) {
          throw new Error(
            `${join(tenantsDir, id, ALLOCATION_FILE)} is not an allocation: ${(e as Error).message}`,
          );
        }
      },
      (e: unknown) => {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e;
      },
    );

  /** The runtime owner of a tenant's control plane: its own id, or that of the warm-pool slot it claimed. */
  const controlPlaneOwner = async (ref: VirtualClusterRef): Promise<string> =>
    (await recordedAllocation(tenantId(ref)))?.id ?? tenantId(ref);

  /**
   * Records `a` as what `id` has, whole or not at all (written beside it, then linked): the
   * allocation another attempt recorded first, if one did, is the answer.
   */
  async function record(id: string, a: TenantAllocation): Promise<TenantAllocation> {
    const file = join(tenantsDir, id, ALLOCATION_FILE);
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(a, null, 2));
    try {
      await link(tmp, file);
      return a;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // A file system without hard links: written in place, first writer only (torn only by a crash).
      if (code && NO_LINKS.has(code))
        return writeFile(file, JSON.stringify(a, null, 2), { flag: 'wx' }).then(
          () => a,
          async (err: unknown) => {
            if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
            return JSON.parse(await readFile(file, 'utf8')) as TenantAllocation;
          },
        );
      if (code !== 'EEXIST') throw e;
      return JSON.parse(await readFile(file, 'utf8')) as TenantAllocation;
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  /** A tenant's directory, ports and allocation.json on this machine (the process runtime). */
  async function allocateOnMachine(id: string, serviceCIDR: string): Promise<TenantAllocation> {
    const dir = join(tenantsDir, id);
    // The directory first: a slot whose filler stopped here is found by it, ports and all.
    await mkdir(dir, { recursive: true, mode: 0o700 });
    let p: number[];
    try {
      p = await ports.allocate(id, 5);
    } catch (e) {
      if (e instanceof PortsExhaustedError)
        throw ApplicationFailure.nonRetryable(e.message, FailureType.PortsExhausted);
      throw e;
    }
    const [etcdClient, etcdPeer, apiserver, controllerManager, scheduler] = p as [
      number,
      number,
      number,
      number,
      number,
    ];
    const allocation: TenantAllocation = {
      id,
      dir,
      address: deps.address,
      ports: { etcdClient, etcdPeer, apiserver, controllerManager, scheduler },
      serviceCIDR,
    };
    const recorded = await record(id, allocation);
    // Another worker's attempt claimed a slot meanwhile: these ports are nobody's.
    if (recorded.id !== id) await ports.release(id);
    return recorded;
  }

  /** Removes whatever of `id` this machine has: its processes, its ports, its directory. */
  async function discard(id: string): Promise<void> {
    await deps.runtime.remove(id);
    await rm(join(tenantsDir, id), { recursive: true, force: true });
    await ports.release(id);
  }

  const warmPool =
    deps.warmPool && deps.controlPlaneRuntime !== 'kubernetes'
      ? new WarmPool({
          size: deps.warmPool.size,
          serviceCIDR: deps.warmPool.serviceCIDR,
          poolDir: join(deps.stateDir, 'pool'),
          tenantsDir,
          make: async (id, serviceCIDR, signal) => {
            const a = await allocateOnMachine(id, serviceCIDR);
            await deps.startSlot(a, signal);
            return a;
          },
          discard,
          logger: deps.logger.child({ part: 'warm-pool' }),
          ...(deps.warmPool.refillDelayMs !== undefined
            ? { refillDelayMs: deps.warmPool.refillDelayMs }
            : {}),
        })
      : undefined;
  // One allocate of a tenant at a time: a slot is claimed once, into an allocation not yet there.
  const allocating = new KeyedLocks();

  async function allocateTenant(
    input: { ref: VirtualClusterRef; serviceCIDR: string },
    id: string,
  ): Promise<TenantAllocation> {
    const existing = await recordedAllocation(id);
    if (existing) return existing;
    const dir = join(tenantsDir, id);
    const file = join(dir, ALLOCATION_FILE);
    // A new tenant only: one made before the operator's setting changed keeps what it has.
    await deps.admit(input.ref);
    await deps.network?.refuseForeignServiceRange(input.ref, input.serviceCIDR);
    if (deps.controlPlaneRuntime === 'kubernetes') {
      // Pods have their own addresses: no port of this machine. The tenant's address is its API
      // server's Service, made now (its host namespace with it): the ClusterIP is in every
      // certificate and kubeconfig.
      const clusterIP = await ensureApiService(deps.host, input.ref, deps.allowPrivilegedTenants ?? false);
      const allocation: TenantAllocation = {
        id,
        dir,
        address: clusterIP,
        ports: { ...POD_PORTS, apiserver: TENANT_API_PORT },
        serviceCIDR: input.serviceCIDR,
        runtime: 'kubernetes',
      };
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const recorded = await record(id, allocation);
      log(input.ref).info('allocated', { id, runtime: 'kubernetes', address: clusterIP });
      return recorded;
    }
    // A restore writes the data and CAs of a backup before etcd starts: never into a running slot.
    if (warmPool?.enabled && !(await deps.host.getVirtualCluster(input.ref))?.spec.restore) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const slot = await warmPool.claim(input.serviceCIDR, file);
      if (slot) {
        // (Or what another worker's attempt recorded meanwhile: the slot then went back.)
        log(input.ref).info('allocated', {
          id,
          ...(slot.id !== id ? { slot: slot.id } : {}),
          ports: slot.ports,
        });
        return slot;
      }
    }
    const allocation = await allocateOnMachine(id, input.serviceCIDR);
    log(input.ref).info('allocated', { id, ports: allocation.ports });
    return allocation;
  }

  return {
    recordedAllocation,
    controlPlaneOwner,
    ...(warmPool ? { warmPool } : {}),
    activities: {
      /** Picks the tenant's ports and directory, or a warm-pool slot; returns the earlier choice when there is one. */
      async allocate(input: { ref: VirtualClusterRef; serviceCIDR: string }): Promise<TenantAllocation> {
        const id = tenantId(input.ref);
        return allocating.run(id, () => allocateTenant(input, id));
      },

      /**
       * Undo of allocate: stops whatever still runs, frees the ports, removes the directory (and
       * the warm-pool slot it claimed). Works from the object's identity alone, so it also cleans
       * up after a run that never recorded its allocation (a terminated workflow, an allocate that
       * failed halfway).
       */
      async release(input: { ref: VirtualClusterRef }): Promise<void> {
        const id = tenantId(input.ref);
        const claimed = (await recordedAllocation(id))?.id;
        // The slot first: the tenant's directory holds the record that names it, for a retry.
        if (claimed && claimed !== id) await discard(claimed);
        await deps.runtime.remove(id);
        await rm(join(tenantsDir, id), { recursive: true, force: true });
        await ports.release(id);
        await ports.release(`${id}/clustertree`);
        await ports.release(dnsPortOwner(id));
        // The host namespace exists from issueCertificates on (the tenant API's Service).
        await deps.host.core.deleteNamespace({ name: hostNamespace(input.ref) }).catch(ignoreStatus(404));
        log(input.ref).info('released', { id, ...(claimed && claimed !== id ? { slot: claimed } : {}) });
      },
    },
  };
}
