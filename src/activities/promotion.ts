/**
 * What a tenant is given to serve: host nodes claimed for it (labelled, annotated and tainted by
 * the operator, not by clusterTree) and a slice of CPU and memory (a virtual node, held to a
 * ResourceQuota in its host namespace); promoteResources makes the set what the spec says,
 * demoteAll hands everything back (ADR 6).
 */
import type { CoreV1Api, KubernetesObject, V1Node, V1Pod, V1Taint } from '@kubernetes/client-node';
import { ignoreStatus, merge } from '../api/kubeClient.js';
import { parseQuantity, type PromoteResources, type VirtualClusterRef } from '../api/virtualCluster.js';
import { forEachLimited } from '../clustertree/queue.js';
import {
  OriginLabel,
  Promotion,
  RESOURCES_PRIORITY_CLASS,
  hostNamespace,
  promotionTaint,
  tenantHash,
} from '../clustertree/naming.js';
import { ensureOperatorKubeconfig } from '../runtime/kubeconfigs.js';
import type { ClusterTreeDeps } from './clusterTree.js';
import { apply, retryOnConflict, tenantAdmin } from './tenantAdmin.js';
import { until } from './wait.js';
import type { PendingNode, PromotionResult, StepInput } from './types.js';

export const QUOTA_NAME = 'kosmos-vc-promoted';
const LIMIT_RANGE = 'kosmos-vc-defaults';
/** The tenant node standing for promoted CPU and memory. */
export const VIRTUAL_NODE = 'kosmos-virtual-resources';
const CONTROL_PLANE_LABELS = ['node-role.kubernetes.io/control-plane', 'node-role.kubernetes.io/master'];

const isDaemonOrMirror = (p: V1Pod): boolean =>
  (p.metadata?.ownerReferences ?? []).some((o) => o.kind === 'DaemonSet') ||
  p.metadata?.annotations?.['kubernetes.io/config.mirror'] !== undefined;
const finished = (p: V1Pod): boolean => p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';

function cpuString(n: number): string {
  return Number.isInteger(n) ? String(n) : `${Math.round(n * 1000)}m`;
}
function memoryString(bytes: number): string {
  const gi = bytes / 2 ** 30;
  if (Number.isInteger(gi)) return `${gi}Gi`;
  const mi = bytes / 2 ** 20;
  return Number.isInteger(mi) ? `${mi}Mi` : String(Math.round(bytes));
}
const scalar = (q: string | number | undefined): number => (q === undefined ? 0 : parseQuantity(q));

export type PromotionDeps = Pick<
  ClusterTreeDeps,
  'host' | 'runtime' | 'logger' | 'layoutOf' | 'tenantId' | 'network'
>;

export function createPromotionActivities(deps: PromotionDeps) {
  const hostCore = deps.host.core;
  const hostObjects = deps.host.objects;
  const log = (ref: VirtualClusterRef) => deps.logger.child({ vc: `${ref.namespace}/${ref.name}` });

  /** Cordons a tenant node and deletes its pods; resolves when clusterTree has removed them both sides. */
  async function drainTenantNode(tenant: CoreV1Api, node: string): Promise<number> {
    await tenant
      .patchNode({ name: node, body: { spec: { unschedulable: true } } }, merge)
      .catch(ignoreStatus(404));
    const onNode = async () =>
      (await tenant.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` })).items;
    const pods = await onNode();
    for (const p of pods)
      if (!p.metadata?.deletionTimestamp)
        await tenant
          .deleteNamespacedPod({ name: p.metadata!.name!, namespace: p.metadata!.namespace! })
          .catch(ignoreStatus(404));
    // Wait for the pods that were there, as `kubectl drain` does: a DaemonSet puts its pod back on
    // a cordoned node, and that one goes when the node leaves the tenant.
    const uids = new Set(pods.map((p) => p.metadata!.uid!));
    await until(`the pods on ${node} to be gone`, 120_000, async () =>
      (await onNode()).every((p) => !uids.has(p.metadata!.uid!)),
    );
    return pods.length;
  }

  /** Removes the promotion label, annotation and taint, if they are this tenant's. */
  async function release(node: V1Node, ref: VirtualClusterRef): Promise<void> {
    if (node.metadata?.labels?.[Promotion.label] !== tenantHash(ref)) return;
    const taints = (node.spec?.taints ?? []).filter((t) => t.key !== Promotion.taint);
    await hostCore.patchNode(
      {
        name: node.metadata.name!,
        body: {
          metadata: {
            resourceVersion: node.metadata.resourceVersion,
            labels: { [Promotion.label]: null },
            annotations: { [Promotion.annotation]: null },
          },
          spec: { taints },
        },
      },
      merge,
    );
  }

  /** Claims a host node for the tenant, or says why not. 409 (a race) is retried by the caller. */
  async function claim(ref: VirtualClusterRef, name: string): Promise<PendingNode | undefined> {
    const node = await hostCore.readNode({ name }).catch(ignoreStatus(404));
    if (!node)
      return { node: name, reason: 'NodeNotFound', message: `host node ${name} does not exist (yet)` };
    const owner = node.metadata?.labels?.[Promotion.label];
    if (owner === tenantHash(ref)) return undefined;
    if (owner)
      return {
        node: name,
        reason: 'NodeOwnedByAnother',
        message: `host node ${name} is promoted to VirtualCluster ${node.metadata?.annotations?.[Promotion.annotation] ?? 'another tenant'}`,
      };
    if (CONTROL_PLANE_LABELS.some((l) => node.metadata?.labels?.[l] !== undefined))
      return { node: name, reason: 'ControlPlaneNode', message: `host node ${name} is a control-plane node` };
    // The tenant's own pods do not count: its control plane in pods (ADR 14) may run on the
    // node it is promoted, as a process control plane runs beside it on the machine.
    const own = hostNamespace(ref);
    const busy = (
      await hostCore.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${name}` })
    ).items.filter((p) => !isDaemonOrMirror(p) && !finished(p) && p.metadata?.namespace !== own);
    if (busy.length > 0)
      return {
        node: name,
        reason: 'NodeHasWorkloads',
        message: `host node ${name} runs ${busy.length} host pod(s) that are not DaemonSet pods (e.g. ${busy[0]!.metadata!.namespace}/${busy[0]!.metadata!.name}); move them first`,
      };
    const taint: V1Taint = { ...promotionTaint(ref), effect: 'NoSchedule' };
    await hostCore.patchNode(
      {
        name,
        body: {
          metadata: {
            resourceVersion: node.metadata!.resourceVersion,
            labels: { [Promotion.label]: tenantHash(ref) },
            annotations: { [Promotion.annotation]: `${ref.namespace}/${ref.name}` },
          },
          spec: { taints: [...(node.spec?.taints ?? []).filter((t) => t.key !== Promotion.taint), taint] },
        },
      },
      merge,
    );
    return undefined;
  }

  async function ownedNodes(ref: VirtualClusterRef): Promise<V1Node[]> {
    return (await hostCore.listNode({ labelSelector: `${Promotion.label}=${tenantHash(ref)}` })).items;
  }

  async function applyResources(
    ref: VirtualClusterRef,
    resources: { cpu?: string | number | undefined; memory?: string | number | undefined },
  ): Promise<void> {
    const ns = hostNamespace(ref);
    const labels = { [OriginLabel.managedBy]: 'kosmos-vc', [OriginLabel.tenant]: tenantHash(ref) };
    await apply(hostObjects, [
      // Shared by all tenants and harmless when unused, so it is never deleted.
      {
        apiVersion: 'scheduling.k8s.io/v1',
        kind: 'PriorityClass',
        metadata: { name: RESOURCES_PRIORITY_CLASS, labels: { [OriginLabel.managedBy]: 'kosmos-vc' } },
        value: 0,
        preemptionPolicy: 'Never',
        description: 'kosmos-vc: tenant pods running on promoted CPU and memory',
      } as KubernetesObject,
      {
        apiVersion: 'v1',
        kind: 'ResourceQuota',
        metadata: { name: QUOTA_NAME, namespace: ns, labels },
        spec: {
          hard: {
            'requests.cpu': String(resources.cpu ?? 0),
            'requests.memory': String(resources.memory ?? 0),
          },
          // Only pods on the virtual node count: pods on promoted nodes use those nodes.
          scopeSelector: {
            matchExpressions: [
              { scopeName: 'PriorityClass', operator: 'In', values: [RESOURCES_PRIORITY_CLASS] },
            ],
          },
        },
      } as KubernetesObject,
      // Quota on requests makes them mandatory: a pod that asks for nothing is charged nothing.
      {
        apiVersion: 'v1',
        kind: 'LimitRange',
        metadata: { name: LIMIT_RANGE, namespace: ns, labels },
        spec: { limits: [{ type: 'Container', defaultRequest: { cpu: '0', memory: '0' } }] },
      } as KubernetesObject,
    ]);
  }

  return {
    /**
     * Makes the promoted set what `promote` says: drains and hands back nodes no longer listed,
     * claims new ones (or says why not), sets the resource quota, then waits until the tenant
     * sees every promoted node.
     */
    async promoteResources(
      input: StepInput & { promote: PromoteResources | undefined },
    ): Promise<PromotionResult> {
      const { ref } = input;
      const l = await deps.layoutOf(input);
      await ensureOperatorKubeconfig(l);
      const tenant = tenantAdmin(l).core;
      const wanted = new Set(input.promote?.nodes ?? []);
      const demoted: string[] = [];
      for (const node of await ownedNodes(ref)) {
        const name = node.metadata!.name!;
        if (wanted.has(name)) continue;
        const evicted = await drainTenantNode(tenant, name);
        await release(await hostCore.readNode({ name }), ref);
        demoted.push(name);
        log(ref).info('node demoted', { node: name, evictedPods: evicted });
      }
      const pending: PendingNode[] = [];
      // Claims are independent: 16 at a time (1,000 nodes one by one took minutes).
      await forEachLimited([...wanted], 16, async (name) => {
        const why = await retryOnConflict(() => claim(ref, name));
        if (why) pending.push(why);
      });
      pending.sort((a, b) => a.node.localeCompare(b.node));
      const res = input.promote?.resources;
      const hasResources = res !== undefined && (res.cpu !== undefined || res.memory !== undefined);
      if (hasResources) await applyResources(ref, res);
      else {
        await drainTenantNode(tenant, VIRTUAL_NODE);
        const ns = hostNamespace(ref);
        await hostCore
          .deleteNamespacedResourceQuota({ name: QUOTA_NAME, namespace: ns })
          .catch(ignoreStatus(404));
        await hostCore
          .deleteNamespacedLimitRange({ name: LIMIT_RANGE, namespace: ns })
          .catch(ignoreStatus(404));
      }

      const owned = await ownedNodes(ref);
      const promoted = owned.map((n) => n.metadata!.name!).sort();
      const expected = new Set([...promoted, ...(hasResources ? [VIRTUAL_NODE] : [])]);
      // The tenant shows every promoted node (Ready or not: that is the host node's own state).
      // clusterTree adds thousands of nodes over many seconds: the wait lasts while their number
      // grows. A list of thousands of nodes is megabytes: it comes from the API server's cache,
      // and less often the more there are. A list that fails (the tenant's API server is busy
      // with those nodes) counts as no progress, not as the end of the step.
      const of = expected.size + demoted.length;
      let count = 0;
      let warned = 0;
      await until(
        'the tenant to show its promoted nodes',
        60_000,
        async () => {
          const list = await tenant.listNode({ resourceVersion: '0' }).catch((e: unknown) => {
            if (Date.now() - warned > 10_000) {
              warned = Date.now();
              log(ref).warn('listing the tenant nodes failed; trying again', { error: String(e) });
            }
            return undefined;
          });
          if (!list) return { done: false, count, of };
          const names = new Set(list.items.map((n) => n.metadata!.name!));
          const shown = [...expected].filter((n) => names.has(n)).length;
          const gone = demoted.filter((n) => !names.has(n)).length;
          count = shown + gone;
          return { done: count === of, count, of };
        },
        Math.min(2_000, Math.max(300, expected.size)),
      );
      const cpu =
        owned.reduce((s, n) => s + scalar(n.status?.allocatable?.cpu), 0) +
        (hasResources ? scalar(res.cpu) : 0);
      const memory =
        owned.reduce((s, n) => s + scalar(n.status?.allocatable?.memory), 0) +
        (hasResources ? scalar(res.memory) : 0);
      return {
        nodes: promoted,
        pending,
        demoted,
        virtualNode: hasResources ? VIRTUAL_NODE : null,
        capacity: { cpu: cpuString(cpu), memory: memoryString(memory) },
      };
    },

    /**
     * Undo of promoteResources and the first step of deletion: stops clusterTree (so it does not
     * re-create what is removed here), deletes every host pod of the tenant, then hands its nodes
     * back. Works from the object's identity alone.
     */
    async demoteAll(input: { ref: VirtualClusterRef }): Promise<void> {
      const { ref } = input;
      await deps.runtime.stop(deps.tenantId(ref), 'clustertree');
      await deps.network?.stopDns(deps.tenantId(ref));
      const ns = hostNamespace(ref);
      const selector = `${OriginLabel.tenant}=${tenantHash(ref)}`;
      await hostCore
        .deleteCollectionNamespacedPod({
          namespace: ns,
          labelSelector: selector,
          body: { gracePeriodSeconds: 0 },
        })
        .catch(ignoreStatus(404));
      await until(
        `the host pods in ${ns} to be gone`,
        120_000,
        async () =>
          (await hostCore.listNamespacedPod({ namespace: ns, labelSelector: selector })).items.length === 0,
      );
      for (const node of await ownedNodes(ref)) {
        await retryOnConflict(async () => {
          const fresh = await hostCore.readNode({ name: node.metadata!.name! }).catch(ignoreStatus(404));
          if (fresh) await release(fresh, ref);
        });
      }
      log(ref).info('all nodes handed back', { hostNamespace: ns });
    },
  };
}
