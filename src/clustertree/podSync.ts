/**
 * The tenant's pods on the host: a tenant pod bound to one of its nodes gets a host pod in the
 * host namespace, kept up with what a tenant may change on a running pod (labels, images,
 * ephemeral containers, resizes), its status copied back; deleting either side is followed
 * through, as a kubelet would (the translations are in translate.ts and runningPod.ts).
 */
import {
  PatchStrategy,
  setHeaderOptions,
  type CoreV1Api,
  type ListWatch,
  type V1EphemeralContainer,
  type V1Node,
  type V1Pod,
  type V1Secret,
} from '@kubernetes/client-node';
import { apiMessage as hostMessage, ignoreStatus, merge, statusCode } from '../api/kubeClient.js';
import type { Logger } from '../worker/logger.js';
import type { ClusterTreeConfig } from './config.js';
import type { MirrorSync } from './mirroredObjects.js';
import { hostName, tenantView, tokenSecretName } from './naming.js';
import type { PodCertificateSync } from './podCertificates.js';
import { PodRefused } from './podSecurity.js';
import {
  hostPodResize,
  hostPodUpdate,
  hostPortRejection,
  statusMatches,
  tenantPodStatus,
} from './runningPod.js';
import type { ServiceSync } from './services.js';
import type { TokenSync } from './tokens.js';
import {
  PodAnnotation,
  hostEphemeralContainers,
  hostPodFor,
  podReferences,
  refusedStatus,
  type TenantContext,
} from './translate.js';
import type { TrustBundleSync } from './trustBundles.js';

export interface PodSyncDeps {
  cfg: ClusterTreeConfig;
  ctx: TenantContext;
  tenantCore: CoreV1Api;
  hostCore: CoreV1Api;
  tenantPods: ListWatch<V1Pod>;
  hostPods: ListWatch<V1Pod>;
  tenantNodes: ListWatch<V1Node>;
  hostNodes: ListWatch<V1Node>;
  hostSecrets: ListWatch<V1Secret>;
  services: ServiceSync;
  tokens: TokenSync;
  trustBundles: TrustBundleSync;
  podCertificates: PodCertificateSync;
  mirror: MirrorSync;
  log: Logger;
}

export class PodSync {
  /**
   * Host pods created but not yet seen by the host informer. Creating one again would fail with
   * 409, but only after quota admission has charged it a second time (the host quota then shows
   * twice the usage until its controller's next full resync), so a second create is not sent.
   */
  private readonly creating = new Map<string, number>();
  /** Host pod name -> uid of the tenant pod the virtual node rejected (never created again). */
  private readonly rejected = new Map<string, string>();

  constructor(private readonly d: PodSyncDeps) {}

  /** The host informer has seen this host pod: a create of it is no longer on its way. */
  seen(hostPod: string): void {
    this.creating.delete(hostPod);
  }

  /** Where a tenant pod runs on the host: a promoted node, 'virtual' (host scheduler), or nowhere. */
  placement(p: V1Pod): { hostNode: string | undefined } | undefined {
    const node = p.spec?.nodeName;
    if (!node) return undefined;
    if (node === this.d.cfg.virtualNodeName)
      return this.d.tenantNodes.get(node) ? { hostNode: undefined } : undefined;
    return this.d.hostNodes.get(node) ? { hostNode: node } : undefined;
  }

  /** One tenant pod: its host pod created, kept up, or removed, and its status copied back. */
  async sync(ns: string, name: string): Promise<void> {
    const tp = this.d.tenantPods.get(name, ns);
    const hname = hostName(ns, name);
    const hp = this.d.hostPods.get(hname, this.d.cfg.hostNamespace);
    const deleteHost = async (grace?: number) => {
      // Grace 0 also ends a pod already terminating (one whose node died, say).
      if (!hp || (hp.metadata?.deletionTimestamp && grace !== 0)) return;
      await this.d.hostCore
        .deleteNamespacedPod({
          name: hname,
          namespace: this.d.cfg.hostNamespace,
          // The API server reads the options from the body when there is one: grace goes there.
          body: {
            preconditions: { uid: hp.metadata!.uid! },
            ...(grace !== undefined ? { gracePeriodSeconds: grace } : {}),
          },
        })
        .catch(ignoreStatus(404, 409));
    };

    if (!tp) {
      this.rejected.delete(hname);
      await deleteHost(0);
      if (!hp) await this.removePodObjects(ns, name);
      return;
    }
    const uid = tp.metadata!.uid!;
    if (hp && hp.metadata?.annotations?.[PodAnnotation.uid] !== uid) {
      // A pod of the same name from before: remove it; its delete event brings us back.
      await deleteHost(0);
      return;
    }
    if (tp.metadata?.deletionTimestamp) {
      if (hp) {
        // A host pod stuck terminating past its grace period (its node died) is removed by force.
        const since = Date.parse(String(hp.metadata?.deletionTimestamp ?? ''));
        const grace = (hp.metadata?.deletionGracePeriodSeconds ?? 30) * 1000;
        if (hp.metadata?.deletionTimestamp && Date.now() > since + grace + 30_000) {
          await this.d.hostCore
            .deleteNamespacedPod({
              name: hname,
              namespace: this.d.cfg.hostNamespace,
              body: { gracePeriodSeconds: 0, preconditions: { uid: hp.metadata.uid! } },
            })
            .catch(ignoreStatus(404, 409));
          return;
        }
        // The host kubelet's last word on it (a terminal phase, exit codes) reaches the tenant, as
        // a kubelet's would: controllers holding a finalizer on their pods (Jobs) wait for it.
        const last = tenantPodStatus(hp, tp);
        if (!statusMatches(tp.status, last))
          await this.d.tenantCore
            .patchNamespacedPodStatus({ name, namespace: ns, body: { status: last } }, merge)
            .catch(ignoreStatus(404));
        return deleteHost(tp.metadata.deletionGracePeriodSeconds ?? undefined);
      }
      await this.removePodObjects(ns, name);
      // The host pod went before a terminal status of it was seen: it was stopped for the
      // deletion, and a kubelet reports such a pod Failed before it removes it.
      if (tp.status?.phase !== 'Succeeded' && tp.status?.phase !== 'Failed')
        await this.d.tenantCore
          .patchNamespacedPodStatus(
            {
              name,
              namespace: ns,
              body: {
                status: { phase: 'Failed', reason: 'Terminated', message: 'stopped for its deletion' },
              },
            },
            merge,
          )
          .catch(ignoreStatus(404));
      // The host side is gone: finish the deletion as a kubelet would.
      await this.d.tenantCore
        .deleteNamespacedPod({
          name,
          namespace: ns,
          body: { gracePeriodSeconds: 0, preconditions: { uid: tp.metadata.uid! } },
        })
        .catch(ignoreStatus(404, 409));
      return;
    }
    const where = this.placement(tp);
    if (!where) {
      // Its node left the tenant (demoted): nothing of it may keep running on the host.
      if (hp) await deleteHost(0);
      return;
    }
    if (!hp) {
      const phase = tp.status?.phase;
      if (phase === 'Succeeded' || phase === 'Failed') return; // finished: nothing to run again
      if (this.rejected.get(hname) === uid) return; // its Failed status is on the way
      let body: V1Pod;
      try {
        body = hostPodFor(this.d.ctx, tp, where.hostNode, this.d.services.settled());
      } catch (e) {
        if (!(e instanceof PodRefused)) throw e;
        await this.d.tenantCore.patchNamespacedPodStatus(
          { name, namespace: ns, body: { status: refusedStatus(e, new Date()) } },
          merge,
        );
        this.d.log.info('pod refused', { pod: `${ns}/${name}`, reason: e.reason });
        return;
      }
      const since = this.creating.get(hname);
      if (since !== undefined && Date.now() - since < 30_000) return; // its event is on the way
      await this.ensurePodDependencies(tp);
      this.creating.set(hname, Date.now());
      try {
        await this.d.hostCore.createNamespacedPod({ namespace: this.d.cfg.hostNamespace, body });
      } catch (e) {
        if (statusCode(e) !== 409) this.creating.delete(hname);
        if (statusCode(e) === 409) return;
        if (statusCode(e) !== 403 && statusCode(e) !== 422) throw e;
        // The host refused it (quota, pod security): fail the tenant pod as a kubelet would.
        const reason = statusCode(e) === 403 ? 'HostAdmissionDenied' : 'HostRejected';
        const why = tenantView(hostMessage(e), this.d.cfg.hostNamespace, ns, name);
        await this.d.tenantCore.patchNamespacedPodStatus(
          { name, namespace: ns, body: { status: refusedStatus(new PodRefused(reason, why), new Date()) } },
          merge,
        );
        this.d.log.info('host refused pod', { pod: `${ns}/${name}`, reason });
      }
      return;
    }
    // A pinned pod (host access, virtual node) must not outlive its node's promotion: once the node
    // is handed back it is shared, and the pod runs again on a node the tenant still has.
    const pinnedOn = hp.metadata?.annotations?.[PodAnnotation.pinned] ? hp.spec?.nodeName : undefined;
    if (pinnedOn && !this.d.hostNodes.get(pinnedOn)) {
      this.d.log.info('pinned pod left a demoted node', { pod: `${ns}/${name}`, node: pinnedOn });
      return deleteHost(0);
    }
    // A pod that has ended for the tenant (rejected below) never runs again, as a kubelet stops
    // a pod whose API status is terminal: its host pod goes, and no status of it is copied back.
    const over = (phase: string | undefined) => phase === 'Succeeded' || phase === 'Failed';
    if ((over(tp.status?.phase) || this.rejected.get(hname) === uid) && !over(hp.status?.phase))
      return deleteHost(0);
    // The virtual node rejects a pod bound to it directly whose host ports are taken on the host,
    // as a kubelet does (runningPod.ts, hostPortRejection).
    const rejected = where.hostNode ? undefined : hostPortRejection(hp, tp);
    if (rejected) {
      this.rejected.set(hname, uid);
      await this.d.tenantCore
        .patchNamespacedPodStatus(
          {
            name,
            namespace: ns,
            body: { status: refusedStatus(new PodRefused('NodePorts', rejected), new Date()) },
          },
          setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
        )
        .catch(ignoreStatus(404));
      this.d.log.info('pod rejected: host ports taken', { pod: `${ns}/${name}` });
      return deleteHost(0);
    }
    // Trust bundles follow the tenant's ClusterTrustBundles while the pod runs; pod certificates
    // are renewed.
    await this.d.trustBundles.write(tp);
    await this.d.podCertificates.write(tp, this.tenantNodeOf(tp));
    // A token Secret deleted behind clusterTree's back is issued again.
    const tokens = podReferences(tp).tokens;
    if (tokens.length > 0 && !this.d.hostSecrets.get(tokenSecretName(ns, name), this.d.cfg.hostNamespace))
      await this.d.tokens.issue(tp, tokens);
    const want = tenantPodStatus(hp, tp);
    if (!statusMatches(tp.status, want)) {
      await this.d.tenantCore
        .patchNamespacedPodStatus({ name, namespace: ns, body: { status: want } }, merge)
        .catch(ignoreStatus(404));
    }
    // What a tenant may change on a running pod (labels, annotations, images, deadline) follows.
    // Ephemeral containers are judged on their own (below): one refused must not stop the rest.
    let update: object | undefined;
    try {
      const { ephemeralContainers: _judgedApart, ...spec } = tp.spec!;
      const withoutEphemeral: V1Pod = { ...tp, spec };
      update = hostPodUpdate(
        hp,
        hostPodFor(this.d.ctx, withoutEphemeral, where.hostNode, this.d.services.settled()),
      );
    } catch (e) {
      if (!(e instanceof PodRefused)) throw e; // running already: refusals apply at creation
    }
    if (update)
      await this.d.hostCore
        .patchNamespacedPod(
          { name: hname, namespace: this.d.cfg.hostNamespace, body: update },
          setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
        )
        .catch(ignoreStatus(404));
    await this.addEphemeralContainers(tp, hp, where.hostNode);
    // An in-place resize goes through the host pod's own resize subresource.
    const resize = hostPodResize(hp, tp);
    if (resize)
      await this.d.hostCore
        .patchNamespacedPodResize(
          { name: hname, namespace: this.d.cfg.hostNamespace, body: resize },
          setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
        )
        .catch((e: unknown) => {
          // The host refuses what it cannot do (more than the node or the tenant's quota has, or
          // not allowed): said once in the log; the host kubelet's status, copied back, says the rest.
          if (statusCode(e) !== 403 && statusCode(e) !== 404 && statusCode(e) !== 422) throw e;
          this.d.log.info('resize refused by the host', { pod: `${ns}/${name}`, status: statusCode(e) });
        });
  }

  /** Ephemeral containers the tenant added to a running pod go to its host pod (never removed). */
  private async addEphemeralContainers(tp: V1Pod, hp: V1Pod, hostNode: string | undefined): Promise<void> {
    const have = new Set((hp.spec?.ephemeralContainers ?? []).map((c) => c.name));
    if ((tp.spec?.ephemeralContainers ?? []).every((c) => have.has(c.name))) return;
    let containers: V1EphemeralContainer[];
    try {
      containers = hostEphemeralContainers(this.d.ctx, tp, hostNode, this.d.services.settled());
    } catch (e) {
      if (!(e instanceof PodRefused)) throw e;
      this.d.log.info('ephemeral container refused', {
        pod: `${tp.metadata!.namespace!}/${tp.metadata!.name!}`,
      });
      return;
    }
    await this.ensurePodDependencies(tp);
    await this.d.hostCore
      .patchNamespacedPodEphemeralcontainers(
        {
          name: hp.metadata!.name!,
          namespace: this.d.cfg.hostNamespace,
          body: { spec: { ephemeralContainers: containers.filter((c) => !have.has(c.name)) } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      )
      .catch(ignoreStatus(404));
  }

  /** The tenant node a pod is bound to, as a kubelet names itself in requests it files. */
  private tenantNodeOf(pod: V1Pod): { name: string; uid: string } | undefined {
    const name = pod.spec?.nodeName;
    const uid = name ? this.d.tenantNodes.get(name)?.metadata?.uid : undefined;
    return name && uid ? { name, uid } : undefined;
  }

  private async ensurePodDependencies(pod: V1Pod): Promise<void> {
    const ns = pod.metadata!.namespace!;
    const refs = podReferences(pod);
    for (const cm of refs.configMaps) await this.d.mirror.syncConfigMap(ns, cm, true);
    for (const s of refs.secrets) await this.d.mirror.syncSecret(ns, s, true);
    await this.d.tokens.issue(pod, refs.tokens);
    await this.d.trustBundles.write(pod);
    await this.d.podCertificates.write(pod, this.tenantNodeOf(pod));
  }

  /** The host objects of one tenant pod: its tokens, trust bundles and pod certificates. */
  private async removePodObjects(ns: string, name: string): Promise<void> {
    await this.d.tokens.remove(ns, name);
    await this.d.trustBundles.remove(ns, name);
    await this.d.podCertificates.remove(ns, name);
  }
}
