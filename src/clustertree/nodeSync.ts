/**
 * The tenant's nodes kept up: each promoted host node (and the virtual node of the host quota)
 * created, updated and removed in the tenant, with a Lease renewed in kube-node-lease and (where
 * the tenant's own controller-manager may judge nodes) the status written again periodically, as
 * a kubelet does. The translations are in tenantNodes.ts.
 */
import type {
  CoordinationV1Api,
  CoreV1Api,
  ListWatch,
  V1Lease,
  V1Node,
  V1ResourceQuota,
} from '@kubernetes/client-node';
import { errorText, ignoreStatus, merge, statusCode } from '../api/kubeClient.js';
import type { Logger } from '../worker/logger.js';
import type { ClusterTreeConfig } from './config.js';
import { microTime } from './events.js';
import { forEachLimited } from './queue.js';
import {
  healthTaintsShape,
  statusDiffers,
  withTransitionTimesKept,
  tenantNodeFor,
  virtualNode,
  withHealthTaints,
} from './tenantNodes.js';

const LEASE_NAMESPACE = 'kube-node-lease';

export interface NodeSyncDeps {
  cfg: ClusterTreeConfig;
  tenantCore: CoreV1Api;
  tenantLeases: CoordinationV1Api;
  hostNodes: ListWatch<V1Node>;
  hostQuotas: ListWatch<V1ResourceQuota>;
  tenantNodes: ListWatch<V1Node>;
  log: Logger;
}

export class NodeSync {
  private readonly nodeUids = new Map<string, string>();
  /**
   * Each node's Lease as its last write returned it: the next renewal replaces it (an update, as a
   * kubelet's, which the API server takes for less than a patch it must apply first). Another
   * writer's change in between makes it a conflict: that renewal patches, as the first does.
   */
  private readonly leases = new Map<string, V1Lease>();
  /** Lease renewals so far. */
  heartbeats = 0;
  /**
   * Renewals whose update of the Lease they last wrote failed (another writer's change, a deleted
   * Lease, an error): each then patches or makes it. None while nobody else writes the Leases.
   */
  heartbeatFallbacks = 0;
  /** When an update's failure was last said at warn (once a minute: one a node would flood). */
  private warnedAt = 0;

  constructor(private readonly d: NodeSyncDeps) {}

  private desiredNode(name: string, now: Date): V1Node | undefined {
    const { cfg } = this.d;
    if (name === cfg.virtualNodeName) {
      const hard = this.d.hostQuotas.get(cfg.quotaName, cfg.hostNamespace)?.spec?.hard;
      const cpu = hard?.['requests.cpu'];
      const memory = hard?.['requests.memory'];
      return cpu && memory
        ? virtualNode(name, { cpu, memory }, now, cfg.kubelet, cfg.virtualNodeAddress)
        : undefined;
    }
    const host = this.d.hostNodes.get(name);
    if (!host) return undefined;
    const node = tenantNodeFor(host, now, cfg.kubelet);
    // A tenant's controller-manager from before ADR 12 decision 19 writes the health taints itself.
    if (!cfg.nodeHealthFromHost) delete node.spec;
    return node;
  }

  /** One node: created, brought up to date (`heartbeat`: its status written even unchanged), or removed. */
  async sync(name: string, heartbeat = false): Promise<void> {
    const { tenantCore, tenantLeases, log } = this.d;
    const now = new Date();
    const want = this.desiredNode(name, now);
    const have = this.d.tenantNodes.get(name);
    if (!want) {
      if (have) {
        await tenantCore.deleteNode({ name }).catch(ignoreStatus(404));
        await tenantLeases
          .deleteNamespacedLease({ name, namespace: LEASE_NAMESPACE })
          .catch(ignoreStatus(404));
        this.nodeUids.delete(name);
        this.leases.delete(name);
        log.info('node removed from tenant', { node: name });
      }
      return;
    }
    if (!have) {
      // A Node is created with its status (as a kubelet registers one): two writes a node, the
      // Node and its Lease, not three.
      const created = await tenantCore.createNode({ body: want }).catch(ignoreStatus(409));
      if (created) {
        this.nodeUids.set(name, created.metadata!.uid!);
        log.info('node added to tenant', { node: name });
      }
      // A node just made has no Lease yet: make it rather than try a renewal first.
      await this.renewLease(name, created !== undefined);
      return;
    }
    this.nodeUids.set(name, have.metadata!.uid!);
    // Only what clusterTree writes is compared: labels others add (a tenant's, a controller's)
    // and the tenant's own taints are theirs, and no cause to write the node again.
    const labels = want.metadata!.labels ?? {};
    const labelsDiffer = Object.entries(labels).some(([k, v]) => have.metadata?.labels?.[k] !== v);
    const taintsDiffer =
      this.d.cfg.nodeHealthFromHost &&
      healthTaintsShape(have.spec?.taints) !== healthTaintsShape(want.spec?.taints);
    const statusChanged = heartbeat || statusDiffers(have, want);
    if (!labelsDiffer && !taintsDiffer && !statusChanged) return;
    if (labelsDiffer && !taintsDiffer)
      await tenantCore.patchNode({ name, body: { metadata: { labels } } }, merge);
    if (taintsDiffer) await this.writeHealthTaints(have, want, labelsDiffer ? labels : undefined);
    if (statusChanged) {
      // A promoted node's transition times are its host node's; the virtual node's are made up.
      const status =
        name === this.d.cfg.virtualNodeName
          ? withTransitionTimesKept(want.status!, have.status)
          : want.status!;
      await tenantCore.patchNodeStatus({ name, body: { status } }, merge);
    }
  }

  /**
   * The host node's health taints in place of the tenant node's, its other taints kept (and
   * `labels`, when they changed too). The taints are one list: written against the node they were
   * read from, so a taint the tenant adds meanwhile makes a conflict, not a loss. The informers'
   * copy is often a write behind (clusterTree's own status write just before): a conflict reads
   * the node again and writes once more; a second one goes back to the queue.
   */
  private async writeHealthTaints(
    have: V1Node,
    want: V1Node,
    labels?: Record<string, string>,
  ): Promise<void> {
    const { tenantCore } = this.d;
    const name = want.metadata!.name!;
    const write = (node: V1Node) =>
      tenantCore.patchNode(
        {
          name,
          body: {
            metadata: { ...(labels ? { labels } : {}), resourceVersion: node.metadata!.resourceVersion },
            spec: { taints: withHealthTaints(node.spec?.taints, want.spec?.taints) },
          },
        },
        merge,
      );
    try {
      await write(have);
    } catch (e) {
      if (statusCode(e) !== 409) throw e;
      await write(await tenantCore.readNode({ name }));
    }
  }

  async renewLeases(): Promise<void> {
    // The Leases of nodes the tenant no longer has are forgotten (a renewal in flight at a
    // node's removal may have kept one).
    const listed = new Set(this.d.tenantNodes.list().map((n) => n.metadata!.name!));
    for (const name of this.leases.keys()) if (!listed.has(name)) this.leases.delete(name);
    await this.forEachNode((n) => this.renewLease(n));
  }

  async refreshStatus(): Promise<void> {
    await this.forEachNode((n) => this.sync(n, true));
  }

  /** Per-node periodic work: one node's failure is logged and does not stop the others. */
  private async forEachNode(fn: (node: string) => Promise<void>): Promise<void> {
    const names = this.d.tenantNodes.list().map((n) => n.metadata!.name!);
    await forEachLimited(names, this.d.cfg.concurrency, (n) =>
      fn(n).catch((e: unknown) => this.d.log.debug('node heartbeat failed', { node: n, error: String(e) })),
    );
  }

  private async renewLease(node: string, isNew = false): Promise<void> {
    const { tenantLeases, cfg, log } = this.d;
    const renewTime = microTime(new Date());
    this.heartbeats++;
    const last = isNew ? undefined : this.leases.get(node);
    // Taken out while the write is in flight: a second renewal of the node meanwhile patches.
    this.leases.delete(node);
    let gone = false;
    const uid = this.nodeUids.get(node) ?? this.d.tenantNodes.get(node)?.metadata?.uid;
    const owners = uid ? [{ apiVersion: 'v1', kind: 'Node', name: node, uid }] : undefined;
    if (last) {
      // A Lease someone else made (a node that came back before its Lease was collected) gets
      // its Node as owner, as a kubelet's renewal sets it.
      const metadata = { ...last.metadata };
      if (!metadata.ownerReferences?.length && owners) metadata.ownerReferences = owners;
      // The stated duration too: a tenant's configuration may have changed it since (ADR 12,
      // decision 19), and a renewal must come within what the Lease says.
      const spec = {
        ...last.spec,
        renewTime: renewTime as never,
        leaseDurationSeconds: cfg.leaseDurationSeconds,
      };
      const body: V1Lease = { ...last, metadata, spec };
      try {
        this.leases.set(
          node,
          await tenantLeases.replaceNamespacedLease({ name: node, namespace: LEASE_NAMESPACE, body }),
        );
        return;
      } catch (e) {
        this.heartbeatFallbacks++;
        gone = statusCode(e) === 404;
        // Another writer's change (409) or a deleted Lease (404) is mended below; anything else
        // is said, and the renewal patches all the same (a Lease is never left to expire for it).
        if (!gone && statusCode(e) !== 409 && Date.now() - this.warnedAt > 60_000) {
          this.warnedAt = Date.now();
          log.warn('node lease update failed; patching it (said once a minute)', {
            node,
            error: errorText(e),
          });
        }
      }
    }
    const patch = async () => {
      const patched = await tenantLeases
        .patchNamespacedLease(
          {
            name: node,
            namespace: LEASE_NAMESPACE,
            body: { spec: { renewTime, leaseDurationSeconds: cfg.leaseDurationSeconds } },
          },
          merge,
        )
        .catch(ignoreStatus(404));
      if (patched) this.leases.set(node, patched);
      return patched;
    };
    if (!isNew && !gone && (await patch())) return;
    // A renewal in flight while its node was removed makes no Lease for it (a node just made,
    // which the tenant's list may not show yet, is one the host still has).
    if (
      !isNew &&
      !this.nodeUids.has(node) &&
      !this.d.tenantNodes.get(node) &&
      !this.desiredNode(node, new Date())
    )
      return;
    const created = await tenantLeases
      .createNamespacedLease({
        namespace: LEASE_NAMESPACE,
        body: {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: {
            name: node,
            namespace: LEASE_NAMESPACE,
            ...(owners ? { ownerReferences: owners } : {}),
          },
          spec: {
            holderIdentity: node,
            leaseDurationSeconds: cfg.leaseDurationSeconds,
            renewTime: renewTime as never,
          },
        },
      })
      .catch(ignoreStatus(409));
    if (created) this.leases.set(node, created);
    // Someone made it in between (a node that came back before its Lease was collected).
    else await patch();
  }
}
