/**
 * Tenant Services on the host (ADR 6, ADR 7, ADR 8): a Service with a selector gets a host Service
 * that selects the translated pods of its namespace, with the tenant Service's own ClusterIP and
 * node ports where the host can grant them. Where it cannot, the tenant Service takes the host
 * Service's (re-created: ClusterIP is immutable), so the address the tenant sees, resolves and
 * puts in environments is always the one that carries traffic. The tenant's
 * `default/kubernetes` takes the address pods reach the tenant API server at.
 */
import type {
  CoreV1Api,
  DiscoveryV1Api,
  ListWatch,
  V1EndpointSlice,
  V1Service,
  V1ServiceSpec,
} from '@kubernetes/client-node';
import { apiMessage as hostMessage, ignoreStatus, merge, statusCode } from '../api/kubeClient.js';
import { cidrContains } from '../api/virtualCluster.js';
import type { Logger } from '../worker/logger.js';
import type { ClusterTreeConfig } from './config.js';
import { MANAGER, hostName } from './naming.js';
import { hostEndpointSliceFor, hostServiceFor, serviceShape, type TenantContext } from './translate.js';

export interface ServiceSyncDeps {
  cfg: ClusterTreeConfig;
  ctx: TenantContext;
  tenantCore: CoreV1Api;
  hostCore: CoreV1Api;
  hostDiscovery: DiscoveryV1Api;
  tenantServices: ListWatch<V1Service>;
  hostServices: ListWatch<V1Service>;
  /** The tenant's EndpointSlices not made by its endpoint controller (those of selector-less Services). */
  tenantSlices: ListWatch<V1EndpointSlice>;
  log: Logger;
}

export class ServiceSync {
  /**
   * Tenant Services being re-created with their host ClusterIP: until the tenant informer shows
   * the new one, its absence is not a deletion (the host Service, and so the IP, must stay).
   */
  private readonly readdressing = new Map<string, number>();
  /** Per tenant Service, the last reason it keeps its own address (so it is warned once). */
  private readonly warned = new Map<string, string>();
  /** Re-addresses that failed in the tenant (address taken), by Service: not tried again. */
  private readonly readdressFailed = new Map<string, string>();
  /** Tenant Services a failed re-address removed and could not put back yet. */
  private readonly pendingRestore = new Map<string, V1Service>();

  constructor(private readonly d: ServiceSyncDeps) {}

  async sync(ns: string, name: string): Promise<void> {
    const t = this.d.tenantServices.get(name, ns);
    const key = `${ns}/${name}`;
    if (ns === 'default' && name === 'kubernetes') {
      // The tenant API server's own Service: its host counterpart is the operator's.
      if (t && this.d.cfg.tenantApi) await this.readdress(t, this.d.cfg.tenantApi.clusterIP, undefined);
      return;
    }
    const hname = hostName(ns, name);
    const hostNs = this.d.cfg.hostNamespace;
    const h = this.d.hostServices.get(hname, hostNs);
    if (!t && this.pendingRestore.has(key)) return this.restore(key);
    const want = t ? hostServiceFor(this.d.ctx, t) : undefined;
    if (!t && Date.now() - (this.readdressing.get(key) ?? 0) < 30_000) return;
    this.readdressing.delete(key);
    // Mirrored slices exist only beside a selector-less host Service: no API call for the rest.
    const mirrored = h !== undefined && !h.spec?.selector;
    if (!want) {
      if (mirrored) await this.mirrorSlices(ns, name, undefined);
      if (h)
        await this.d.hostCore
          .deleteNamespacedService({ name: hname, namespace: hostNs })
          .catch(ignoreStatus(404));
      return;
    }
    if (!want.spec?.selector) await this.mirrorSlices(ns, name, hname);
    else if (mirrored) await this.mirrorSlices(ns, name, undefined); // it has a selector now
    if (!h) {
      const created = await this.createHostService(t!, want);
      if (created) await this.readdress(t!, created.spec?.clusterIP, created);
      return;
    }
    if (
      serviceShape(h) !== serviceShape(want) ||
      (h.spec?.clusterIP === 'None') !== (want.spec?.clusterIP === 'None')
    ) {
      if ((h.spec?.clusterIP === 'None') !== (want.spec?.clusterIP === 'None')) {
        // clusterIP is immutable: a change between headless and not needs a new Service.
        await this.d.hostCore
          .deleteNamespacedService({ name: hname, namespace: hostNs })
          .catch(ignoreStatus(404));
        return;
      }
      await this.d.hostCore.patchNamespacedService(
        {
          name: hname,
          namespace: hostNs,
          // A type change (ClusterIP <-> NodePort) goes along; the API server drops node ports a
          // ClusterIP Service may not have and allocates those a NodePort needs.
          body: {
            spec: {
              type: want.spec!.type,
              // A merge patch merges maps: keys the tenant dropped are removed by name.
              selector: {
                ...Object.fromEntries(Object.keys(h.spec?.selector ?? {}).map((k) => [k, null])),
                ...want.spec!.selector,
              },
              ports: want.spec!.ports,
              sessionAffinity: want.spec!.sessionAffinity ?? 'None',
              sessionAffinityConfig: want.spec!.sessionAffinityConfig ?? null,
              publishNotReadyAddresses: want.spec!.publishNotReadyAddresses ?? false,
            },
          },
        },
        merge,
      );
      return; // the host Service's event brings the new node ports back here
    }
    await this.readdress(t!, h.spec?.clusterIP, h);
  }

  /**
   * Creates the host Service, asking first for the tenant Service's own ClusterIP (and node
   * ports): when the host grants them, the tenant's address never changes, and a client that
   * kept the address from its create call (as the e2e suite's network specs do) keeps a working
   * one. Another tenant or the host may hold them already (each allocates on its own from the
   * same range): then the host chooses, and the tenant Service is re-addressed.
   */
  private async createHostService(t: V1Service, want: V1Service): Promise<V1Service | undefined> {
    const s = t.spec ?? {};
    const ip = s.clusterIP;
    const own = ip && ip !== 'None' && this.d.cfg.serviceCIDR && cidrContains(this.d.cfg.serviceCIDR, ip);
    const nodePorts = new Map((s.ports ?? []).map((p) => [`${p.protocol ?? 'TCP'}/${p.port}`, p.nodePort]));
    const withPorts = (w: V1Service): V1Service => ({
      ...w,
      spec: {
        ...w.spec,
        ports: (w.spec?.ports ?? []).map((p) => {
          const nodePort = nodePorts.get(`${p.protocol ?? 'TCP'}/${p.port}`);
          return nodePort && w.spec?.type === 'NodePort' ? { ...p, nodePort } : p;
        }),
      },
    });
    const withIP = (w: V1Service): V1Service => ({
      ...w,
      spec: { ...w.spec, clusterIP: ip!, clusterIPs: [ip!] },
    });
    const attempts = own ? [withPorts(withIP(want)), withIP(want), want] : [want];
    for (const [i, body] of attempts.entries()) {
      try {
        return await this.d.hostCore.createNamespacedService({ namespace: this.d.cfg.hostNamespace, body });
      } catch (e) {
        if (statusCode(e) === 409) return undefined; // created meanwhile: its event comes back here
        // 422: the address or a node port is taken on the host; try with less of the tenant's.
        if (statusCode(e) !== 422 || i === attempts.length - 1) throw e;
      }
    }
    return undefined;
  }

  /**
   * Tenant Services whose address is final (what service-link variables may name): those with a
   * host counterpart once they carry its ClusterIP; headless, ExternalName and selector-less ones
   * as they are. A pod created in between does without the variable, as one created before the
   * Service does.
   */
  settled(): V1Service[] {
    return this.d.tenantServices.list().filter((t) => {
      const ns = t.metadata!.namespace!;
      if (!hostServiceFor(this.d.ctx, t) || t.spec?.clusterIP === 'None') return true;
      const h = this.d.hostServices.get(hostName(ns, t.metadata!.name!), this.d.cfg.hostNamespace);
      return h?.spec?.clusterIP === t.spec?.clusterIP;
    });
  }

  /**
   * Gives a tenant Service the ClusterIP (and node ports) of its host Service, so the address the
   * tenant sees, resolves and puts in environments is the one that carries traffic. ClusterIP is
   * immutable: the tenant Service is re-created, as vcluster's syncer does.
   */
  private async readdress(t: V1Service, ip: string | undefined, h: V1Service | undefined): Promise<void> {
    const s = t.spec ?? {};
    if (!ip || ip === 'None' || s.type === 'ExternalName' || s.clusterIP === 'None') return;
    const hostPorts = new Map(
      (h?.spec?.ports ?? []).map((p) => [`${p.protocol ?? 'TCP'}/${p.port}`, p.nodePort]),
    );
    const ports = (s.ports ?? []).map((p) => {
      const nodePort = hostPorts.get(`${p.protocol ?? 'TCP'}/${p.port}`);
      return nodePort && (s.type === 'NodePort' || s.type === 'LoadBalancer') ? { ...p, nodePort } : p;
    });
    const portsMatch = ports.every((p, i) => p.nodePort === s.ports?.[i]?.nodePort);
    if (s.clusterIP === ip && portsMatch) return;
    const ns = t.metadata!.namespace!;
    const name = t.metadata!.name!;
    const key = `${ns}/${name}`;
    if (this.d.cfg.serviceCIDR && !cidrContains(this.d.cfg.serviceCIDR, ip)) {
      // Deleting would lose the Service for good: the tenant's range cannot hold the host's IP.
      this.warnOnce(
        key,
        `tenant service keeps its own ClusterIP: ${ip} is outside the tenant range ${this.d.cfg.serviceCIDR}`,
      );
      return;
    }
    const meta = t.metadata!;
    if (meta.deletionTimestamp || (meta.finalizers?.length ?? 0) > 0) {
      // A delete would leave it Terminating (or end it for good): leave such a Service alone.
      this.warnOnce(key, 'tenant service keeps its own ClusterIP: it has finalizers or is being deleted');
      return;
    }
    const attempt = `${ip}|${ports.map((p) => p.nodePort ?? '').join(',')}`;
    if (this.readdressFailed.get(key) === attempt) return; // taken in the tenant: not again for this address
    const copy = (spec: V1ServiceSpec): V1Service => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: {
        name,
        namespace: ns,
        ...(meta.labels ? { labels: meta.labels } : {}),
        ...(meta.annotations ? { annotations: meta.annotations } : {}),
        ...(meta.ownerReferences ? { ownerReferences: meta.ownerReferences } : {}),
      },
      spec,
    });
    const { healthCheckNodePort: _unused, ...kept } = s;
    this.readdressing.set(key, Date.now());
    const deleted = await this.d.tenantCore
      .deleteNamespacedService({ name, namespace: ns, body: { preconditions: { uid: meta.uid! } } })
      .then(
        () => true,
        (e: unknown) => {
          // 404: the user deleted it; 409: it is another object now. Either way, not ours to re-create.
          if (statusCode(e) === 404 || statusCode(e) === 409) return false;
          throw e;
        },
      );
    if (!deleted) return;
    try {
      await this.d.tenantCore.createNamespacedService({
        namespace: ns,
        body: copy({ ...kept, clusterIP: ip, clusterIPs: [ip], ports }),
      });
      this.readdressFailed.delete(key);
      this.d.log.info('tenant service takes its host ClusterIP', { service: key, clusterIP: ip });
    } catch (e) {
      // 409: re-created meanwhile (the apiserver's `kubernetes`): its next event brings it back here.
      if (statusCode(e) === 409) return;
      // The address (or a node port) is taken in the tenant: put the Service back as it was, with
      // an address of the tenant's choosing, say why, and do not try this address again.
      this.readdressFailed.set(key, attempt);
      this.d.log.warn('tenant service cannot take its host ClusterIP; restored', {
        service: key,
        error: hostMessage(e),
      });
      const { clusterIP: _ip, clusterIPs: _ips, ...rest } = kept;
      const original = copy({ ...rest, ports: (s.ports ?? []).map(({ nodePort: _np, ...p }) => p) });
      this.pendingRestore.set(key, original);
      await this.restore(key);
    }
  }

  /**
   * Makes the host EndpointSlices of a selector-less Service what the tenant's slices say (only
   * addresses in the allowed ranges), or removes them (`hostService` undefined).
   */
  private async mirrorSlices(ns: string, name: string, hostService: string | undefined): Promise<void> {
    const hostNs = this.d.cfg.hostNamespace;
    const want = hostService
      ? this.d.tenantSlices
          .list(ns)
          .filter((sl) => sl.metadata?.labels?.['kubernetes.io/service-name'] === name)
          .map((sl) => hostEndpointSliceFor(this.d.ctx, sl, hostService, this.d.cfg.endpointRanges))
      : [];
    const have = (
      await this.d.hostDiscovery.listNamespacedEndpointSlice({
        namespace: hostNs,
        labelSelector: `kubernetes.io/service-name=${hostName(ns, name)},endpointslice.kubernetes.io/managed-by=${MANAGER}`,
      })
    ).items;
    for (const sl of want) {
      const current = have.find((x) => x.metadata?.name === sl.metadata!.name);
      const same =
        current &&
        JSON.stringify([current.endpoints ?? [], current.ports ?? []]) ===
          JSON.stringify([sl.endpoints, sl.ports ?? []]);
      if (same) continue;
      if (current)
        await this.d.hostDiscovery.replaceNamespacedEndpointSlice({
          name: sl.metadata!.name!,
          namespace: hostNs,
          body: { ...sl, metadata: { ...sl.metadata, resourceVersion: current.metadata!.resourceVersion! } },
        });
      else await this.d.hostDiscovery.createNamespacedEndpointSlice({ namespace: hostNs, body: sl });
    }
    for (const x of have)
      if (!want.some((sl) => sl.metadata!.name === x.metadata?.name))
        await this.d.hostDiscovery
          .deleteNamespacedEndpointSlice({ name: x.metadata!.name!, namespace: hostNs })
          .catch(ignoreStatus(404));
  }

  /** Re-creates a tenant Service a failed re-address removed; kept until it succeeds. */
  private async restore(key: string): Promise<void> {
    const body = this.pendingRestore.get(key);
    if (!body) return;
    await this.d.tenantCore
      .createNamespacedService({ namespace: body.metadata!.namespace!, body })
      .catch(ignoreStatus(409));
    this.pendingRestore.delete(key);
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.get(key) === message) return;
    this.warned.set(key, message);
    this.d.log.warn(message, { service: key });
  }
}
