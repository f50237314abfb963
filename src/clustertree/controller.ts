/**
 * clusterTree: one per tenant. It shows the tenant its promoted capacity as nodes and runs the
 * tenant's pods on the host.
 *
 * - Host nodes labelled for this tenant (the operator labels and taints them) become tenant
 *   nodes of the same name; a ResourceQuota in the tenant's host namespace becomes one virtual
 *   node with exactly that allocatable. Leases in kube-node-lease keep them Ready (nodeSync.ts).
 * - A tenant pod bound to one of these nodes gets a host pod in the host namespace; its status
 *   (phase, conditions, IPs, container statuses) is copied back. Deleting either side is
 *   followed through; a host pod deleted behind clusterTree's back is created again.
 * - ConfigMaps, Secrets and service-account tokens the pods use, and Services, get host copies
 *   that follow updates.
 *
 * Every event becomes a key in one queue (`pod/<ns>/<name>`, `node/<name>`, ...); a sync looks at
 * both caches and does what is missing, so a restart, a missed event or a duplicate event
 * converges the same way. A periodic resync re-queues everything for drift nobody reported.
 */
import type { ListWatch } from '@kubernetes/client-node';
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type CoreV1Event,
  type V1ConfigMap,
  type V1EndpointSlice,
  type V1EphemeralContainer,
  type V1Node,
  type V1Pod,
  type V1ResourceQuota,
  type V1Secret,
  type V1Service,
} from '@kubernetes/client-node';
import { apiMessage as hostMessage, ignoreStatus, merge, statusCode } from '../api/kubeClient.js';
import type { Logger } from '../worker/logger.js';
import type { ClusterTreeConfig } from './config.js';
import type { HostPodRef } from './kubeletServer.js';
import { EventSync, HOST_POD_EVENTS } from './events.js';
import {
  POD_CERTIFICATE_REQUESTS,
  PodCertificateSync,
  podCertificatesOwner,
  type PodCertificateRequestObject,
} from './podCertificates.js';
import { ServiceSync } from './services.js';
import {
  KWOK_NODE_ANNOTATION,
  MANAGER,
  ORIGIN_ANNOTATION,
  OriginLabel,
  Promotion,
  hostName,
  tenantHash,
  tenantView,
  tokenSecretName,
} from './naming.js';
import {
  PodAnnotation,
  TENANT_NODE_LABEL,
  hostConfigMapFor,
  hostPodFor,
  hostEphemeralContainers,
  hostSecretFor,
  podReferences,
  refusedStatus,
  sameData,
  type TenantContext,
} from './translate.js';
import { PodRefused } from './podSecurity.js';
import {
  hostPodResize,
  hostPodUpdate,
  hostPortRejection,
  statusMatches,
  tenantPodStatus,
} from './runningPod.js';
import { NodeSync } from './nodeSync.js';
import { TokenSync, tokenOwner } from './tokens.js';
import {
  CLUSTER_TRUST_BUNDLES,
  TrustBundleSync,
  trustBundleSources,
  trustBundlesOwner,
  type TrustBundleObject,
} from './trustBundles.js';
import { Informers, type InformerOptions } from './informers.js';
import { KeyedQueue, type FairShare } from './queue.js';

/** Origin namespace/name of a host object clusterTree made. */
function origin(o: KubernetesObject): { namespace: string; name: string } | undefined {
  const raw = o.metadata?.annotations?.[ORIGIN_ANNOTATION];
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as { namespace?: unknown; name?: unknown };
    return typeof v.namespace === 'string' && typeof v.name === 'string'
      ? { namespace: v.namespace, name: v.name }
      : undefined;
  } catch {
    return undefined;
  }
}

export interface ClusterTreeStats {
  ready: boolean;
  nodes: number;
  pods: number;
  hostPods: number;
  queueDepth: number;
  processed: number;
  syncErrors: number;
  heartbeats: number;
}

export class ClusterTree {
  private readonly ctx: TenantContext;
  private readonly tenantCore: CoreV1Api;
  private readonly hostCore: CoreV1Api;
  private readonly queue: KeyedQueue;
  private readonly informers: Informers;
  private readonly timers: NodeJS.Timeout[] = [];
  /**
   * Host pods created but not yet seen by the host informer. Creating one again would fail with
   * 409, but only after quota admission has charged it a second time (the host quota then shows
   * twice the usage until its controller's next full resync), so a second create is not sent.
   */
  private readonly creating = new Map<string, number>();
  /** Host pod name -> uid of the tenant pod the virtual node rejected (never created again). */
  private readonly rejected = new Map<string, string>();
  private stopped = false;
  private ready = false;
  private syncErrors = 0;

  private readonly hostNodes: ListWatch<V1Node>;
  private readonly hostPods: ListWatch<V1Pod>;
  private readonly hostConfigMaps: ListWatch<V1ConfigMap>;
  private readonly hostSecrets: ListWatch<V1Secret>;
  private readonly hostServices: ListWatch<V1Service>;
  private readonly hostQuotas: ListWatch<V1ResourceQuota>;
  private readonly tenantNodes: ListWatch<V1Node>;
  private readonly tenantPods: ListWatch<V1Pod>;
  private readonly tenantConfigMaps: ListWatch<V1ConfigMap>;
  private readonly tenantSecrets: ListWatch<V1Secret>;
  private readonly tenantServices: ListWatch<V1Service>;
  private readonly trustBundles: TrustBundleSync;
  private readonly tokens: TokenSync;
  private readonly services: ServiceSync;
  private readonly nodes: NodeSync;
  private readonly events: EventSync;
  private readonly podCertificates: PodCertificateSync;

  constructor(
    private readonly cfg: ClusterTreeConfig,
    tenantKc: KubeConfig,
    hostKc: KubeConfig,
    private readonly log: Logger,
    opts: {
      onSynced?: (key: string, seconds: number, ok: boolean) => void;
      /** The slots of a shared process, this tree's syncs taking their turns with other tenants'. */
      share?: FairShare;
    } = {},
  ) {
    const { onSynced, share } = opts;
    this.ctx = {
      tenant: cfg.tenant,
      hostNamespace: cfg.hostNamespace,
      ...(cfg.tenantApi ? { tenantApi: cfg.tenantApi } : {}),
      ...(cfg.clusterDNS ? { clusterDNS: cfg.clusterDNS } : {}),
      podSecurity: cfg.podSecurity,
      ...(cfg.hostsImage ? { hostsImage: cfg.hostsImage } : {}),
    };
    this.informers = new Informers(log);
    this.tenantCore = tenantKc.makeApiClient(CoreV1Api);
    this.hostCore = hostKc.makeApiClient(CoreV1Api);
    this.queue = new KeyedQueue({
      // Nothing is synced before every cache holds a full list: an empty cache would look like
      // "deleted" and clusterTree would remove what it should keep.
      paused: true,
      concurrency: cfg.concurrency,
      handle: (key) => this.sync(key),
      ...(share
        ? { share: { share, tenant: `${cfg.tenant.namespace}/${cfg.tenant.name}/${cfg.tenant.uid}` } }
        : {}),
      ...(onSynced ? { onDone: onSynced } : {}),
      onError: (key, err, retryInMs) => {
        this.syncErrors++;
        this.log.warn('sync failed; retrying', {
          key,
          error: (err as Error).message ?? String(err),
          retryInMs,
        });
      },
    });

    const ns = cfg.hostNamespace;
    const mine = `${OriginLabel.tenant}=${tenantHash(cfg.tenant)}`;
    const h = this.hostCore;
    const t = this.tenantCore;
    const list =
      <T>(fn: () => Promise<T>) =>
      () =>
        fn() as unknown as Promise<KubernetesListObject<never>>;

    this.hostNodes = this.source(
      hostKc,
      'host nodes',
      '/api/v1/nodes',
      list(() => h.listNode({ labelSelector: `${Promotion.label}=${tenantHash(cfg.tenant)}` })),
      `${Promotion.label}=${tenantHash(cfg.tenant)}`,
      (n) => {
        this.queue.add(`node/${n.metadata!.name!}`);
        // Pods pinned to the tenant's promoted nodes are looked at again when one comes or goes.
        // (The host pod cache may not exist yet while the node list arrives.)
        for (const p of (this.hostPods as ListWatch<V1Pod> | undefined)?.list() ?? []) {
          const a = p.metadata?.annotations ?? {};
          if (a[PodAnnotation.pinned] && p.spec?.nodeName === n.metadata!.name && a[PodAnnotation.namespace])
            this.queue.add(`pod/${a[PodAnnotation.namespace]}/${a[PodAnnotation.name]}`);
        }
      },
    );
    this.hostPods = this.source(
      hostKc,
      'host pods',
      `/api/v1/namespaces/${ns}/pods`,
      list(() => h.listNamespacedPod({ namespace: ns, labelSelector: mine })),
      mine,
      (p) => {
        this.creating.delete(p.metadata!.name!);
        const a = p.metadata?.annotations ?? {};
        const tns = a[PodAnnotation.namespace];
        const tname = a[PodAnnotation.name];
        if (tns && tname) this.queue.add(`pod/${tns}/${tname}`);
        // Kubelet events about it that came first. (The event sync exists once construction is done.)
        for (const e of (this.events as EventSync | undefined)?.arrived(p.metadata!.name!) ?? [])
          this.queue.add(`event/${e}`);
      },
    );
    this.hostConfigMaps = this.source(
      hostKc,
      'host configmaps',
      `/api/v1/namespaces/${ns}/configmaps`,
      list(() => h.listNamespacedConfigMap({ namespace: ns, labelSelector: mine })),
      mine,
      (o) => {
        // A pod's trust-bundle ConfigMap belongs to its pod: a change to it re-syncs the pod.
        const bundlesFor = trustBundlesOwner(o);
        if (bundlesFor) this.queue.add(`pod/${bundlesFor.join('/')}`);
        else this.byOrigin('cm', o);
      },
    );
    this.hostSecrets = this.source(
      hostKc,
      'host secrets',
      `/api/v1/namespaces/${ns}/secrets`,
      list(() => h.listNamespacedSecret({ namespace: ns, labelSelector: mine })),
      mine,
      (o) => {
        // A token or pod-certificate Secret belongs to its pod: a change to it (say, a deletion)
        // re-syncs the pod.
        const podFor = tokenOwner(o) ?? podCertificatesOwner(o);
        if (podFor) this.queue.add(`pod/${podFor.join('/')}`);
        else this.byOrigin('secret', o);
      },
    );
    this.hostServices = this.source(
      hostKc,
      'host services',
      `/api/v1/namespaces/${ns}/services`,
      list(() => h.listNamespacedService({ namespace: ns, labelSelector: mine })),
      mine,
      (o) => this.byOrigin('svc', o),
    );
    this.hostQuotas = this.source(
      hostKc,
      'host quota',
      `/api/v1/namespaces/${ns}/resourcequotas`,
      list(() => h.listNamespacedResourceQuota({ namespace: ns })),
      undefined,
      () => this.queue.add(`node/${cfg.virtualNodeName}`),
    );

    const ours = `${TENANT_NODE_LABEL}=${MANAGER}`;
    this.tenantNodes = this.source(
      tenantKc,
      'tenant nodes',
      '/api/v1/nodes',
      list(() => t.listNode({ labelSelector: ours })),
      ours,
      (n) => this.queue.add(`node/${n.metadata!.name!}`),
    );
    this.tenantPods = this.source(
      tenantKc,
      'tenant pods',
      '/api/v1/pods',
      list(() => t.listPodForAllNamespaces()),
      undefined,
      (p) => this.queue.add(`pod/${p.metadata!.namespace!}/${p.metadata!.name!}`),
    );
    this.tenantConfigMaps = this.source(
      tenantKc,
      'tenant configmaps',
      '/api/v1/configmaps',
      list(() => t.listConfigMapForAllNamespaces()),
      undefined,
      (o) => this.queue.add(`cm/${o.metadata!.namespace!}/${o.metadata!.name!}`),
    );
    this.tenantSecrets = this.source(
      tenantKc,
      'tenant secrets',
      '/api/v1/secrets',
      list(() => t.listSecretForAllNamespaces()),
      undefined,
      (o) => this.queue.add(`secret/${o.metadata!.namespace!}/${o.metadata!.name!}`),
    );
    this.tenantServices = this.source(
      tenantKc,
      'tenant services',
      '/api/v1/services',
      list(() => t.listServiceForAllNamespaces()),
      undefined,
      (o) => this.queue.add(`svc/${o.metadata!.namespace!}/${o.metadata!.name!}`),
    );
    const tenantCustom = tenantKc.makeApiClient(CustomObjectsApi);
    const tenantBundles = this.source<TrustBundleObject>(
      tenantKc,
      'tenant clustertrustbundles',
      '/apis/certificates.k8s.io/v1/clustertrustbundles',
      list(() => tenantCustom.listClusterCustomObject(CLUSTER_TRUST_BUNDLES)),
      undefined,
      // Rare, and any pod may project any bundle: every pod that projects one is looked at again.
      () => {
        for (const p of this.tenantPods.list())
          if (trustBundleSources(p).length > 0)
            this.queue.add(`pod/${p.metadata!.namespace!}/${p.metadata!.name!}`);
      },
    );
    this.tokens = new TokenSync({
      tenant: cfg.tenant,
      hostNamespace: cfg.hostNamespace,
      tokenExpirationSeconds: cfg.tokenExpirationSeconds,
      tenantCore: this.tenantCore,
      hostCore: this.hostCore,
      hostSecrets: this.hostSecrets,
    });
    this.trustBundles = new TrustBundleSync({
      tenant: cfg.tenant,
      hostNamespace: cfg.hostNamespace,
      tenantCustom,
      hostCore: this.hostCore,
      tenantBundles,
      hostConfigMaps: this.hostConfigMaps,
    });
    // The tenant's PodCertificateRequests: one issued or refused re-syncs its pod. Syncing does not
    // wait for their list: a tenant API without the resource has no pod certificates at all.
    const tenantRequests = this.source<PodCertificateRequestObject>(
      tenantKc,
      'tenant podcertificaterequests',
      '/apis/certificates.k8s.io/v1/podcertificaterequests',
      list(() => tenantCustom.listClusterCustomObject(POD_CERTIFICATE_REQUESTS)),
      undefined,
      (r) => {
        const owner = r.metadata?.ownerReferences?.find((o) => o.kind === 'Pod');
        if (owner) this.queue.add(`pod/${r.metadata!.namespace!}/${owner.name}`);
      },
      { gates: false },
    );
    this.podCertificates = new PodCertificateSync({
      tenant: cfg.tenant,
      hostNamespace: cfg.hostNamespace,
      tenantCore: this.tenantCore,
      tenantCustom,
      hostCore: this.hostCore,
      hostSecrets: this.hostSecrets,
      tenantRequests,
      log,
    });
    // Slices the tenant's endpoint controller did not make: those of selector-less Services.
    const handmade = 'endpointslice.kubernetes.io/managed-by!=endpointslice-controller.k8s.io';
    const tenantDiscovery = tenantKc.makeApiClient(DiscoveryV1Api);
    const tenantSlices = this.source<V1EndpointSlice>(
      tenantKc,
      'tenant endpointslices',
      '/apis/discovery.k8s.io/v1/endpointslices',
      list(() => tenantDiscovery.listEndpointSliceForAllNamespaces({ labelSelector: handmade })),
      handmade,
      (o) => {
        const svc = o.metadata?.labels?.['kubernetes.io/service-name'];
        if (svc) this.queue.add(`svc/${o.metadata!.namespace!}/${svc}`);
      },
    );
    // The host kubelet's events about the tenant's pods. Syncing does not wait for their list: a
    // host Role from before they were mirrored cannot list them, and pods run without them.
    const hostEvents = this.source<CoreV1Event>(
      hostKc,
      'host pod events',
      `/api/v1/namespaces/${ns}/events`,
      list(() => h.listNamespacedEvent({ namespace: ns, fieldSelector: HOST_POD_EVENTS })),
      undefined,
      (e) => this.queue.add(`event/${e.metadata.name!}`),
      { fieldSelector: HOST_POD_EVENTS, gates: false },
    );
    this.events = new EventSync({
      hostNamespace: ns,
      tenantCore: this.tenantCore,
      hostEvents,
      hostPods: this.hostPods,
      tenantPods: this.tenantPods,
    });
    this.nodes = new NodeSync({
      cfg,
      tenantCore: this.tenantCore,
      tenantLeases: tenantKc.makeApiClient(CoordinationV1Api),
      hostNodes: this.hostNodes,
      hostQuotas: this.hostQuotas,
      tenantNodes: this.tenantNodes,
      log,
    });
    this.services = new ServiceSync({
      cfg,
      ctx: this.ctx,
      tenantCore: this.tenantCore,
      hostCore: this.hostCore,
      hostDiscovery: hostKc.makeApiClient(DiscoveryV1Api),
      tenantServices: this.tenantServices,
      hostServices: this.hostServices,
      tenantSlices,
      log,
    });
  }

  private byOrigin(kind: string, o: KubernetesObject): void {
    const from = origin(o);
    if (from) this.queue.add(`${kind}/${from.namespace}/${from.name}`);
  }

  /** A watched list (informers.ts); every add, update and delete queues the key `onEvent` derives. */
  private source<T extends KubernetesObject>(
    kc: KubeConfig,
    name: string,
    path: string,
    listFn: () => Promise<KubernetesListObject<never>>,
    labelSelector: string | undefined,
    onEvent: (o: T) => void,
    opts: Omit<InformerOptions, 'labelSelector'> = {},
  ): ListWatch<T> {
    return this.informers.add(kc, name, path, listFn, onEvent, {
      ...opts,
      ...(labelSelector ? { labelSelector } : {}),
    });
  }

  async start(): Promise<void> {
    if (!(await this.informers.start()) || this.stopped) return;
    this.queue.resume();
    this.enqueueAll();
    // Ready once the first full pass is done (or has had its chance: failing keys back off).
    await Promise.race([this.queue.idle(), new Promise((r) => setTimeout(r, 15_000).unref())]);
    // Stopped during the first pass: no periodic work starts (a shared process outlives the tree).
    if (this.stopped) return;
    this.ready = true;
    // A pass that outlasts its interval (thousands of Leases) is not joined by a second one: the
    // next starts at the first tick after it ends, so the work never piles up. A pass still
    // running after `hungAfterMs` may hang on a request that never returns: the next one starts
    // anyway. For Leases that is one and a half intervals: the replacement runs ~30 s after the
    // last pass that renewed them, inside their 40 s duration and the 50 s grace period.
    const every = (name: string, ms: number, hungAfterMs: number, fn: () => Promise<void> | void) => {
      let startedAt: number | undefined;
      const t = setInterval(() => {
        if (this.stopped) return;
        const now = Date.now();
        if (startedAt !== undefined) {
          if (now - startedAt < hungAfterMs) return;
          this.log.warn('periodic pass still running; starting the next one', {
            pass: name,
            runningForSeconds: Math.round((now - startedAt) / 1000),
          });
        }
        const mine = (startedAt = now);
        void Promise.resolve(fn())
          .catch((e: unknown) => this.log.warn('periodic work failed', { pass: name, error: String(e) }))
          .finally(() => {
            if (startedAt === mine) startedAt = undefined;
          });
      }, ms);
      this.timers.push(t);
    };
    const beat = this.cfg.heartbeatIntervalMs;
    every('leases', beat, 1.5 * beat, () => this.nodes.renewLeases());
    const status = this.cfg.nodeStatusIntervalMs;
    every('node status', status, 3 * status, () => this.nodes.refreshStatus());
    const resync = this.cfg.resyncIntervalMs;
    every('resync', resync, Math.max(3 * resync, 60_000), () => this.resync());
    this.log.info('clusterTree ready', this.stats() as unknown as Record<string, unknown>);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await Promise.all([this.queue.stop(), this.informers.stop()]);
  }

  stats(): ClusterTreeStats {
    return {
      ready: this.ready,
      nodes: this.tenantNodes.list().length,
      pods: this.tenantPods.list().filter((p) => this.placement(p) !== undefined).length,
      hostPods: this.hostPods.list().length,
      queueDepth: this.queue.depth,
      processed: this.queue.processed,
      syncErrors: this.syncErrors,
      heartbeats: this.nodes.heartbeats,
    };
  }

  get isReady(): boolean {
    return this.ready;
  }

  /**
   * The host pod of a tenant pod clusterTree runs (what the kubelet endpoint serves), if any,
   * and the name of its node when that is a simulated (kwok) node, which has nothing to serve.
   */
  hostPodOf(namespace: string, name: string): HostPodRef | undefined {
    const pod = this.tenantPods.get(name, namespace);
    if (!pod || !this.placement(pod)) return undefined;
    const hname = hostName(namespace, name);
    const node = this.hostPods.get(hname, this.cfg.hostNamespace)?.spec?.nodeName;
    const simulated =
      node && this.hostNodes.get(node)?.metadata?.annotations?.[KWOK_NODE_ANNOTATION] === 'fake';
    return { namespace: this.cfg.hostNamespace, name: hname, ...(simulated ? { simulatedNode: node } : {}) };
  }

  private enqueueAll(): void {
    for (const n of this.hostNodes.list()) this.queue.add(`node/${n.metadata!.name!}`);
    for (const n of this.tenantNodes.list()) this.queue.add(`node/${n.metadata!.name!}`);
    this.queue.add(`node/${this.cfg.virtualNodeName}`);
    for (const p of this.tenantPods.list())
      this.queue.add(`pod/${p.metadata!.namespace!}/${p.metadata!.name!}`);
    for (const p of this.hostPods.list()) {
      const a = p.metadata?.annotations ?? {};
      if (a[PodAnnotation.namespace] && a[PodAnnotation.name])
        this.queue.add(`pod/${a[PodAnnotation.namespace]}/${a[PodAnnotation.name]}`);
    }
    for (const s of this.tenantServices.list())
      this.queue.add(`svc/${s.metadata!.namespace!}/${s.metadata!.name!}`);
    for (const s of this.hostServices.list()) this.byOrigin('svc', s);
    for (const c of this.hostConfigMaps.list()) if (!trustBundlesOwner(c)) this.byOrigin('cm', c);
    for (const s of this.hostSecrets.list())
      if (!tokenOwner(s) && !podCertificatesOwner(s)) this.byOrigin('secret', s);
  }

  private resyncing = false;
  private async resync(): Promise<void> {
    if (this.resyncing) return; // the previous one is still collecting garbage
    this.resyncing = true;
    try {
      this.enqueueAll();
      await this.collectGarbage();
    } finally {
      this.resyncing = false;
    }
  }

  private async sync(key: string): Promise<void> {
    const [kind, a, b] = key.split('/') as [string, string, string | undefined];
    switch (kind) {
      case 'node':
        return this.nodes.sync(a);
      case 'pod':
        return this.syncPod(a, b!);
      case 'cm':
        return this.syncConfigMap(a, b!);
      case 'secret':
        return this.syncSecret(a, b!);
      case 'svc':
        return this.services.sync(a, b!);
      case 'event':
        return this.events.sync(a);
      default:
        this.log.warn('unknown key', { key });
    }
  }

  // ---- pods ----------------------------------------------------------------------------------

  /** Where a tenant pod runs on the host: a promoted node, 'virtual' (host scheduler), or nowhere. */
  private placement(p: V1Pod): { hostNode: string | undefined } | undefined {
    const node = p.spec?.nodeName;
    if (!node) return undefined;
    if (node === this.cfg.virtualNodeName)
      return this.tenantNodes.get(node) ? { hostNode: undefined } : undefined;
    return this.hostNodes.get(node) ? { hostNode: node } : undefined;
  }

  private async syncPod(ns: string, name: string): Promise<void> {
    const tp = this.tenantPods.get(name, ns);
    const hname = hostName(ns, name);
    const hp = this.hostPods.get(hname, this.cfg.hostNamespace);
    const deleteHost = async (grace?: number) => {
      // Grace 0 also ends a pod already terminating (one whose node died, say).
      if (!hp || (hp.metadata?.deletionTimestamp && grace !== 0)) return;
      await this.hostCore
        .deleteNamespacedPod({
          name: hname,
          namespace: this.cfg.hostNamespace,
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
          await this.hostCore
            .deleteNamespacedPod({
              name: hname,
              namespace: this.cfg.hostNamespace,
              body: { gracePeriodSeconds: 0, preconditions: { uid: hp.metadata.uid! } },
            })
            .catch(ignoreStatus(404, 409));
          return;
        }
        // The host kubelet's last word on it (a terminal phase, exit codes) reaches the tenant, as
        // a kubelet's would: controllers holding a finalizer on their pods (Jobs) wait for it.
        const last = tenantPodStatus(hp, tp);
        if (!statusMatches(tp.status, last))
          await this.tenantCore
            .patchNamespacedPodStatus({ name, namespace: ns, body: { status: last } }, merge)
            .catch(ignoreStatus(404));
        return deleteHost(tp.metadata.deletionGracePeriodSeconds ?? undefined);
      }
      await this.removePodObjects(ns, name);
      // The host pod went before a terminal status of it was seen: it was stopped for the
      // deletion, and a kubelet reports such a pod Failed before it removes it.
      if (tp.status?.phase !== 'Succeeded' && tp.status?.phase !== 'Failed')
        await this.tenantCore
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
      await this.tenantCore
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
        body = hostPodFor(this.ctx, tp, where.hostNode, this.services.settled());
      } catch (e) {
        if (!(e instanceof PodRefused)) throw e;
        await this.tenantCore.patchNamespacedPodStatus(
          { name, namespace: ns, body: { status: refusedStatus(e, new Date()) } },
          merge,
        );
        this.log.info('pod refused', { pod: `${ns}/${name}`, reason: e.reason });
        return;
      }
      const since = this.creating.get(hname);
      if (since !== undefined && Date.now() - since < 30_000) return; // its event is on the way
      await this.ensurePodDependencies(tp);
      this.creating.set(hname, Date.now());
      try {
        await this.hostCore.createNamespacedPod({ namespace: this.cfg.hostNamespace, body });
      } catch (e) {
        if (statusCode(e) !== 409) this.creating.delete(hname);
        if (statusCode(e) === 409) return;
        if (statusCode(e) !== 403 && statusCode(e) !== 422) throw e;
        // The host refused it (quota, pod security): fail the tenant pod as a kubelet would.
        const reason = statusCode(e) === 403 ? 'HostAdmissionDenied' : 'HostRejected';
        const why = tenantView(hostMessage(e), this.cfg.hostNamespace, ns, name);
        await this.tenantCore.patchNamespacedPodStatus(
          { name, namespace: ns, body: { status: refusedStatus(new PodRefused(reason, why), new Date()) } },
          merge,
        );
        this.log.info('host refused pod', { pod: `${ns}/${name}`, reason });
      }
      return;
    }
    // A pinned pod (host access, virtual node) must not outlive its node's promotion: once the node
    // is handed back it is shared, and the pod runs again on a node the tenant still has.
    const pinnedOn = hp.metadata?.annotations?.[PodAnnotation.pinned] ? hp.spec?.nodeName : undefined;
    if (pinnedOn && !this.hostNodes.get(pinnedOn)) {
      this.log.info('pinned pod left a demoted node', { pod: `${ns}/${name}`, node: pinnedOn });
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
      await this.tenantCore
        .patchNamespacedPodStatus(
          {
            name,
            namespace: ns,
            body: { status: refusedStatus(new PodRefused('NodePorts', rejected), new Date()) },
          },
          setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
        )
        .catch(ignoreStatus(404));
      this.log.info('pod rejected: host ports taken', { pod: `${ns}/${name}` });
      return deleteHost(0);
    }
    // Trust bundles follow the tenant's ClusterTrustBundles while the pod runs; pod certificates
    // are renewed.
    await this.trustBundles.write(tp);
    await this.podCertificates.write(tp, this.tenantNodeOf(tp));
    // A token Secret deleted behind clusterTree's back is issued again.
    const tokens = podReferences(tp).tokens;
    if (tokens.length > 0 && !this.hostSecrets.get(tokenSecretName(ns, name), this.cfg.hostNamespace))
      await this.tokens.issue(tp, tokens);
    const want = tenantPodStatus(hp, tp);
    if (!statusMatches(tp.status, want)) {
      await this.tenantCore
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
        hostPodFor(this.ctx, withoutEphemeral, where.hostNode, this.services.settled()),
      );
    } catch (e) {
      if (!(e instanceof PodRefused)) throw e; // running already: refusals apply at creation
    }
    if (update)
      await this.hostCore
        .patchNamespacedPod(
          { name: hname, namespace: this.cfg.hostNamespace, body: update },
          setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
        )
        .catch(ignoreStatus(404));
    await this.addEphemeralContainers(tp, hp, where.hostNode);
    // An in-place resize goes through the host pod's own resize subresource.
    const resize = hostPodResize(hp, tp);
    if (resize)
      await this.hostCore
        .patchNamespacedPodResize(
          { name: hname, namespace: this.cfg.hostNamespace, body: resize },
          setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
        )
        .catch((e: unknown) => {
          // The host refuses what it cannot do (more than the node or the tenant's quota has, or
          // not allowed): said once in the log; the host kubelet's status, copied back, says the rest.
          if (statusCode(e) !== 403 && statusCode(e) !== 404 && statusCode(e) !== 422) throw e;
          this.log.info('resize refused by the host', { pod: `${ns}/${name}`, status: statusCode(e) });
        });
  }

  /** Ephemeral containers the tenant added to a running pod go to its host pod (never removed). */
  private async addEphemeralContainers(tp: V1Pod, hp: V1Pod, hostNode: string | undefined): Promise<void> {
    const have = new Set((hp.spec?.ephemeralContainers ?? []).map((c) => c.name));
    if ((tp.spec?.ephemeralContainers ?? []).every((c) => have.has(c.name))) return;
    let containers: V1EphemeralContainer[];
    try {
      containers = hostEphemeralContainers(this.ctx, tp, hostNode, this.services.settled());
    } catch (e) {
      if (!(e instanceof PodRefused)) throw e;
      this.log.info('ephemeral container refused', {
        pod: `${tp.metadata!.namespace!}/${tp.metadata!.name!}`,
      });
      return;
    }
    await this.ensurePodDependencies(tp);
    await this.hostCore
      .patchNamespacedPodEphemeralcontainers(
        {
          name: hp.metadata!.name!,
          namespace: this.cfg.hostNamespace,
          body: { spec: { ephemeralContainers: containers.filter((c) => !have.has(c.name)) } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      )
      .catch(ignoreStatus(404));
  }

  /** The tenant node a pod is bound to, as a kubelet names itself in requests it files. */
  private tenantNodeOf(pod: V1Pod): { name: string; uid: string } | undefined {
    const name = pod.spec?.nodeName;
    const uid = name ? this.tenantNodes.get(name)?.metadata?.uid : undefined;
    return name && uid ? { name, uid } : undefined;
  }

  private async ensurePodDependencies(pod: V1Pod): Promise<void> {
    const ns = pod.metadata!.namespace!;
    const refs = podReferences(pod);
    for (const cm of refs.configMaps) await this.syncConfigMap(ns, cm, true);
    for (const s of refs.secrets) await this.syncSecret(ns, s, true);
    await this.tokens.issue(pod, refs.tokens);
    await this.trustBundles.write(pod);
    await this.podCertificates.write(pod, this.tenantNodeOf(pod));
  }

  // ---- configmaps, secrets, services ---------------------------------------------------------

  /** True when a tenant pod that runs on the host uses this ConfigMap or Secret. */
  private referenced(kind: 'configMaps' | 'secrets', ns: string, name: string): boolean {
    return this.tenantPods
      .list(ns)
      .some((p) => this.placement(p) !== undefined && podReferences(p)[kind].has(name));
  }

  private async syncConfigMap(ns: string, name: string, needed = false): Promise<void> {
    const t = this.tenantConfigMaps.get(name, ns);
    const hname = hostName(ns, name);
    const h = this.hostConfigMaps.get(hname, this.cfg.hostNamespace);
    const hostNs = this.cfg.hostNamespace;
    if (!t || (!needed && !h && !this.referenced('configMaps', ns, name))) {
      if (h && !t)
        await this.hostCore
          .deleteNamespacedConfigMap({ name: hname, namespace: hostNs })
          .catch(ignoreStatus(404));
      return;
    }
    const want = hostConfigMapFor(this.ctx, t);
    if (!h)
      await this.hostCore
        .createNamespacedConfigMap({ namespace: hostNs, body: want })
        .catch(ignoreStatus(409));
    else if (!sameData(h, want))
      await this.hostCore.replaceNamespacedConfigMap({ name: hname, namespace: hostNs, body: want });
  }

  private async syncSecret(ns: string, name: string, needed = false): Promise<void> {
    const t = this.tenantSecrets.get(name, ns);
    const hname = hostName(ns, name);
    const h = this.hostSecrets.get(hname, this.cfg.hostNamespace);
    const hostNs = this.cfg.hostNamespace;
    const want = t ? hostSecretFor(this.ctx, t) : undefined;
    if (!want || (!needed && !h && !this.referenced('secrets', ns, name))) {
      if (h && !want)
        await this.hostCore
          .deleteNamespacedSecret({ name: hname, namespace: hostNs })
          .catch(ignoreStatus(404));
      return;
    }
    if (!h)
      await this.hostCore.createNamespacedSecret({ namespace: hostNs, body: want }).catch(ignoreStatus(409));
    else if (!sameData(h, want))
      await this.hostCore.replaceNamespacedSecret({ name: hname, namespace: hostNs, body: want });
  }

  /** The host objects of one tenant pod: its tokens, trust bundles and pod certificates. */
  private async removePodObjects(ns: string, name: string): Promise<void> {
    await this.tokens.remove(ns, name);
    await this.trustBundles.remove(ns, name);
    await this.podCertificates.remove(ns, name);
  }

  /** Neither side has the pod any more: what belonged to it can go. */
  private podGone([ns, pod]: [string, string]): boolean {
    return !this.tenantPods.get(pod, ns) && !this.hostPods.get(hostName(ns, pod), this.cfg.hostNamespace);
  }

  /** Host copies nothing needs any more: unreferenced ConfigMaps/Secrets, objects of gone pods. */
  private async collectGarbage(): Promise<void> {
    const hostNs = this.cfg.hostNamespace;
    for (const h of this.hostConfigMaps.list()) {
      const bundlesFor = trustBundlesOwner(h);
      if (bundlesFor) {
        if (this.podGone(bundlesFor)) await this.trustBundles.remove(...bundlesFor);
        continue;
      }
      const from = origin(h);
      if (from && !this.referenced('configMaps', from.namespace, from.name))
        await this.hostCore
          .deleteNamespacedConfigMap({ name: h.metadata!.name!, namespace: hostNs })
          .catch(ignoreStatus(404));
    }
    for (const h of this.hostSecrets.list()) {
      const certificatesFor = podCertificatesOwner(h);
      if (certificatesFor) {
        if (this.podGone(certificatesFor)) await this.podCertificates.remove(...certificatesFor);
        continue;
      }
      const tokenFor = tokenOwner(h);
      if (tokenFor) {
        const [ns, pod] = tokenFor;
        if (this.podGone(tokenFor)) await this.tokens.remove(ns, pod);
        else {
          const tp = this.tenantPods.get(pod, ns);
          // Renews them when due.
          if (tp && this.placement(tp)) await this.tokens.issue(tp, podReferences(tp).tokens);
        }
        continue;
      }
      const from = origin(h);
      if (from && !this.referenced('secrets', from.namespace, from.name))
        await this.hostCore
          .deleteNamespacedSecret({ name: h.metadata!.name!, namespace: hostNs })
          .catch(ignoreStatus(404));
    }
  }
}
