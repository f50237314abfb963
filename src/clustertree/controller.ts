/**
 * clusterTree: one per tenant. It shows the tenant its promoted capacity as nodes and runs the
 * tenant's pods on the host.
 *
 * - Host nodes labelled for this tenant (the operator labels and taints them) become tenant
 *   nodes of the same name; a ResourceQuota in the tenant's host namespace becomes one virtual
 *   node with exactly that allocatable. Each shows its host node's conditions and health taints
 *   and has a Lease in kube-node-lease, renewed as a kubelet's (nodeSync.ts).
 * - A tenant pod bound to one of these nodes gets a host pod in the host namespace; its status
 *   (phase, conditions, IPs, container statuses) is copied back. Deleting either side is
 *   followed through; a host pod deleted behind clusterTree's back is created again (podSync.ts).
 * - ConfigMaps and Secrets the pods use (mirroredObjects.ts), their service-account tokens
 *   (tokens.ts), and Services (services.ts) get host copies that follow updates.
 *
 * This file holds the watched lists, the queue and the periodic work, and hands each key to the
 * sync of its kind.
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
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type CoreV1Event,
  type V1ConfigMap,
  type V1EndpointSlice,
  type V1Node,
  type V1Pod,
  type V1ResourceQuota,
  type V1Secret,
  type V1Service,
} from '@kubernetes/client-node';
import type { Logger } from '../worker/logger.js';
import { periodicPasses, type ClusterTreeConfig, type PeriodicPass } from './config.js';
import type { HostPodRef } from './kubeletServer.js';
import { EventSync, HOST_POD_EVENTS } from './events.js';
import {
  POD_CERTIFICATE_REQUESTS,
  PodCertificateSync,
  podCertificatesOwner,
  type PodCertificateRequestObject,
} from './podCertificates.js';
import { ServiceSync } from './services.js';
import { KWOK_NODE_ANNOTATION, MANAGER, OriginLabel, Promotion, hostName, tenantHash } from './naming.js';
import { PodAnnotation, TENANT_NODE_LABEL, type TenantContext } from './translate.js';
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
import { MirrorSync, origin } from './mirroredObjects.js';
import { PodSync } from './podSync.js';
import { KeyedQueue, type FairShare } from './queue.js';

export interface ClusterTreeStats {
  ready: boolean;
  nodes: number;
  pods: number;
  hostPods: number;
  queueDepth: number;
  processed: number;
  syncErrors: number;
  heartbeats: number;
  /** Lease renewals that could not update the Lease they last wrote (NodeSync.heartbeatFallbacks). */
  heartbeatFallbacks: number;
}

export class ClusterTree {
  private readonly ctx: TenantContext;
  private readonly tenantCore: CoreV1Api;
  private readonly hostCore: CoreV1Api;
  private readonly queue: KeyedQueue;
  private readonly informers: Informers;
  private readonly timers: NodeJS.Timeout[] = [];
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
  private readonly mirror: MirrorSync;
  private readonly pods: PodSync;

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
        // (The pod sync exists once construction is done.)
        (this.pods as PodSync | undefined)?.seen(p.metadata!.name!);
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
    this.mirror = new MirrorSync({
      cfg,
      ctx: this.ctx,
      hostCore: this.hostCore,
      tenantPods: this.tenantPods,
      hostPods: this.hostPods,
      tenantConfigMaps: this.tenantConfigMaps,
      tenantSecrets: this.tenantSecrets,
      hostConfigMaps: this.hostConfigMaps,
      hostSecrets: this.hostSecrets,
      tokens: this.tokens,
      trustBundles: this.trustBundles,
      podCertificates: this.podCertificates,
      placed: (p) => this.pods.placement(p) !== undefined,
    });
    this.pods = new PodSync({
      cfg,
      ctx: this.ctx,
      tenantCore: this.tenantCore,
      hostCore: this.hostCore,
      tenantPods: this.tenantPods,
      hostPods: this.hostPods,
      tenantNodes: this.tenantNodes,
      hostNodes: this.hostNodes,
      hostSecrets: this.hostSecrets,
      services: this.services,
      tokens: this.tokens,
      trustBundles: this.trustBundles,
      podCertificates: this.podCertificates,
      mirror: this.mirror,
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
    // anyway. For Leases that is one and a half intervals (the kubelet's 10 s and 40 s: the
    // replacement runs ~30 s after the last pass that renewed them, inside their duration and a
    // node-lifecycle controller's 50 s grace period; the operator's 60 s and 240 s: at the
    // first tick 1.5 intervals after a hung pass began, ~180 s after the last renewal).
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
    const work: Record<PeriodicPass['name'], () => Promise<void>> = {
      leases: () => this.nodes.renewLeases(),
      'node status': () => this.nodes.refreshStatus(),
      resync: () => this.resync(),
    };
    for (const p of periodicPasses(this.cfg)) every(p.name, p.ms, p.hungAfterMs, work[p.name]);
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
      pods: this.tenantPods.list().filter((p) => this.pods.placement(p) !== undefined).length,
      hostPods: this.hostPods.list().length,
      queueDepth: this.queue.depth,
      processed: this.queue.processed,
      syncErrors: this.syncErrors,
      heartbeats: this.nodes.heartbeats,
      heartbeatFallbacks: this.nodes.heartbeatFallbacks,
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
    if (!pod || !this.pods.placement(pod)) return undefined;
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
      await this.mirror.collectGarbage();
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
        return this.pods.sync(a, b!);
      case 'cm':
        return this.mirror.syncConfigMap(a, b!);
      case 'secret':
        return this.mirror.syncSecret(a, b!);
      case 'svc':
        return this.services.sync(a, b!);
      case 'event':
        return this.events.sync(a);
      default:
        this.log.warn('unknown key', { key });
    }
  }
}
