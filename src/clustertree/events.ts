/**
 * The host kubelet's events about a tenant's host pods, shown to the tenant as events about its
 * own pods: `kubectl describe pod` lists Pulling, Created, Started, Killing, BackOff, probe
 * failures and refusals (a forbidden sysctl, a failed mount) as in any cluster, and clients that
 * wait for them (the conformance suite's sysctl specs do) see them.
 *
 * Only kubelet events are mirrored: the host scheduler's and host controllers' events speak of
 * host nodes and host objects the tenant never sees (the tenant's own scheduler reports its
 * placement). A tenant event is named after the tenant pod and the host event, and written with
 * server-side apply, so a repeat (count, last timestamp) updates it and a restart converges.
 */
import {
  PatchStrategy,
  setHeaderOptions,
  type CoreV1Api,
  type CoreV1Event,
  type ListWatch,
  type V1Pod,
} from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import { ignoreStatus } from '../api/kubeClient.js';
import { HOSTS_CONTAINER } from './etcHosts.js';
import { MANAGER, tenantView } from './naming.js';
import { PodAnnotation } from './translate.js';

/** Field selector of the host events worth watching: the kubelet's, about pods. */
export const HOST_POD_EVENTS = 'involvedObject.kind=Pod,source=kubelet';

const MAX_NAME = 253;

/**
 * An event as written to the tenant: its times are strings as the API spells them (a Date would be
 * written with milliseconds, which a MicroTime refuses).
 */
export type TenantEvent = Omit<CoreV1Event, 'firstTimestamp' | 'lastTimestamp' | 'eventTime'> & {
  firstTimestamp?: string;
  lastTimestamp?: string;
  eventTime?: string;
};

/** A Time field as the API writes it (seconds), whether the cache holds a Date or a string. */
function time(v: Date | string | undefined | null): string | undefined {
  if (!v) return undefined;
  return typeof v === 'string' ? v : v.toISOString().replace(/\.\d+Z$/, 'Z');
}

/** A MicroTime field (six fractional digits), whether the cache holds a Date or a string. */
export function microTime(v: Date): string;
export function microTime(v: Date | string | undefined | null): string | undefined;
export function microTime(v: Date | string | undefined | null): string | undefined {
  if (!v) return undefined;
  return typeof v === 'string' ? v : v.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/**
 * The tenant's copy of a host kubelet event about a host pod, or undefined when there is none to
 * make: not a kubelet event about a pod, or its host pod or tenant pod is gone or was replaced
 * (a different uid: the event is about an earlier pod of that name).
 */
export function tenantEventFor(
  ev: CoreV1Event,
  hostPod: V1Pod | undefined,
  tenantPod: V1Pod | undefined,
  hostNamespace: string,
): TenantEvent | undefined {
  const about = ev.involvedObject;
  if (about.kind !== 'Pod' || (ev.source?.component ?? ev.reportingComponent) !== 'kubelet') return undefined;
  if (!hostPod || hostPod.metadata?.uid !== about.uid) return undefined;
  const a = hostPod.metadata?.annotations ?? {};
  const ns = a[PodAnnotation.namespace];
  const name = a[PodAnnotation.name];
  if (!ns || !name || !tenantPod || tenantPod.metadata?.uid !== a[PodAnnotation.uid]) return undefined;
  // The /etc/hosts rewrite (etcHosts.ts) is not the tenant's container.
  if (
    a[PodAnnotation.hostsRewritten] === 'true' &&
    about.fieldPath === `spec.initContainers{${HOSTS_CONTAINER}}`
  )
    return undefined;
  // The kubelet names an event `<pod>.<hex time>`: the tenant's is `<tenant pod>.<same hex>`.
  const hostPodName = hostPod.metadata!.name!;
  const evName = ev.metadata.name!;
  const suffix = evName.startsWith(`${hostPodName}.`)
    ? evName.slice(hostPodName.length + 1)
    : createHash('sha256').update(evName).digest('hex').slice(0, 16);
  const node = a[PodAnnotation.node] ?? tenantPod.spec?.nodeName;
  const firstTimestamp = time(ev.firstTimestamp);
  const lastTimestamp = time(ev.lastTimestamp);
  const eventTime = microTime(ev.eventTime);
  return {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name: `${name.slice(0, MAX_NAME - suffix.length - 1)}.${suffix}`, namespace: ns },
    involvedObject: {
      apiVersion: 'v1',
      kind: 'Pod',
      namespace: ns,
      name,
      uid: tenantPod.metadata!.uid!,
      ...(about.fieldPath ? { fieldPath: about.fieldPath } : {}),
    },
    ...(ev.reason ? { reason: ev.reason } : {}),
    ...(ev.message ? { message: tenantView(ev.message, hostNamespace, ns, name) } : {}),
    ...(ev.type ? { type: ev.type } : {}),
    ...(ev.count ? { count: ev.count } : {}),
    ...(ev.action ? { action: ev.action } : {}),
    ...(firstTimestamp ? { firstTimestamp } : {}),
    ...(lastTimestamp ? { lastTimestamp } : {}),
    ...(eventTime ? { eventTime } : {}),
    source: { component: 'kubelet', ...(node ? { host: node } : {}) },
    reportingComponent: 'kubelet',
    ...(node ? { reportingInstance: node } : {}),
  };
}

export interface EventSyncDeps {
  hostNamespace: string;
  tenantCore: CoreV1Api;
  hostEvents: ListWatch<CoreV1Event>;
  hostPods: ListWatch<V1Pod>;
  tenantPods: ListWatch<V1Pod>;
}

export class EventSync {
  /** Host event name → the resourceVersion last written to the tenant: a resync writes nothing. */
  private readonly written = new Map<string, string>();
  /** Host pod name → events about it that came before the pod reached the cache. */
  private readonly early = new Map<string, Set<string>>();

  constructor(private readonly d: EventSyncDeps) {}

  async sync(hostEventName: string): Promise<void> {
    const ev = this.d.hostEvents.get(hostEventName, this.d.hostNamespace);
    if (!ev) {
      // Expired on the host; the tenant's copy expires by the tenant apiserver's own event TTL.
      this.written.delete(hostEventName);
      for (const [pod, names] of this.early)
        if (names.delete(hostEventName) && names.size === 0) this.early.delete(pod);
      return;
    }
    const version = ev.metadata?.resourceVersion ?? '';
    if (this.written.get(hostEventName) === version) return;
    const podName = ev.involvedObject.name ?? '';
    const hostPod = this.d.hostPods.get(podName, this.d.hostNamespace);
    if (!hostPod && ev.involvedObject.kind === 'Pod') {
      // Not in the cache yet (or gone): looked at again when the pod arrives (`arrived`).
      this.early.set(podName, (this.early.get(podName) ?? new Set()).add(hostEventName));
      return;
    }
    const a = hostPod?.metadata?.annotations ?? {};
    const [ns, name] = [a[PodAnnotation.namespace], a[PodAnnotation.name]];
    const tenantPod = ns && name ? this.d.tenantPods.get(name, ns) : undefined;
    const want = tenantEventFor(ev, hostPod, tenantPod, this.d.hostNamespace);
    if (want)
      await this.d.tenantCore
        .patchNamespacedEvent(
          {
            name: want.metadata.name!,
            namespace: want.metadata.namespace!,
            body: want,
            fieldManager: MANAGER,
            force: true,
          },
          setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
        )
        // The tenant namespace is gone or terminating: there is nobody to tell.
        .catch(ignoreStatus(403, 404));
    this.written.set(hostEventName, version);
  }

  /** The events that came before this host pod reached the cache: to be synced again. */
  arrived(hostPodName: string): string[] {
    const names = [...(this.early.get(hostPodName) ?? [])];
    this.early.delete(hostPodName);
    return names;
  }
}
