/**
 * The host kubelet's events about a host pod, as the tenant sees them: about its own pod, on its
 * own node, in its own names, and only while the event is about the pod that is there now.
 */
import type { CoreV1Api, CoreV1Event, ListWatch, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { HOSTS_CONTAINER } from '../../src/clustertree/etcHosts.js';
import { EventSync, tenantEventFor } from '../../src/clustertree/events.js';
import { hostName } from '../../src/clustertree/naming.js';
import { PodAnnotation } from '../../src/clustertree/translate.js';

const HOST_NS = 'kvc-team-vc1-0123456789';
const HOST_POD = hostName('shop', 'web-1');

const tenantPod: V1Pod = {
  metadata: { name: 'web-1', namespace: 'shop', uid: 'tenant-uid' },
  spec: { nodeName: 'kosmos-vc-resources', containers: [{ name: 'app', image: 'app:1' }] },
};
const hostPod: V1Pod = {
  metadata: {
    name: HOST_POD,
    namespace: HOST_NS,
    uid: 'host-uid',
    annotations: {
      [PodAnnotation.namespace]: 'shop',
      [PodAnnotation.name]: 'web-1',
      [PodAnnotation.uid]: 'tenant-uid',
      [PodAnnotation.node]: 'kosmos-vc-resources',
    },
  },
  spec: { nodeName: 'host-node-7', containers: [{ name: 'app', image: 'app:1' }] },
};

function hostEvent(over: Partial<CoreV1Event> = {}): CoreV1Event {
  return {
    metadata: { name: `${HOST_POD}.18a2b3c4d5e6f708`, namespace: HOST_NS, resourceVersion: '7' },
    involvedObject: {
      kind: 'Pod',
      apiVersion: 'v1',
      namespace: HOST_NS,
      name: HOST_POD,
      uid: 'host-uid',
      fieldPath: 'spec.containers{app}',
    },
    reason: 'Failed',
    message: `Error: failed to mount volume of ${HOST_NS}/${HOST_POD}`,
    type: 'Warning',
    count: 3,
    firstTimestamp: new Date('2026-12-02T10:00:00.123Z'),
    lastTimestamp: new Date('2026-12-02T10:05:00.456Z'),
    source: { component: 'kubelet', host: 'host-node-7' },
    reportingComponent: 'kubelet',
    reportingInstance: 'host-node-7',
    ...over,
  };
}

describe('tenant copies of host kubelet events', () => {
  it('are about the tenant pod, on its tenant node, in tenant names, with the host count and times', () => {
    const ev = tenantEventFor(hostEvent(), hostPod, tenantPod, HOST_NS)!;
    expect(ev.metadata).toEqual({ name: 'web-1.18a2b3c4d5e6f708', namespace: 'shop' });
    expect(ev.involvedObject).toEqual({
      apiVersion: 'v1',
      kind: 'Pod',
      namespace: 'shop',
      name: 'web-1',
      uid: 'tenant-uid',
      fieldPath: 'spec.containers{app}',
    });
    expect(ev.message).toBe('Error: failed to mount volume of shop/web-1');
    expect(ev).toMatchObject({ reason: 'Failed', type: 'Warning', count: 3 });
    // Written as the API spells a Time: seconds, no milliseconds.
    expect(ev.firstTimestamp).toBe('2026-12-02T10:00:00Z');
    expect(ev.lastTimestamp).toBe('2026-12-02T10:05:00Z');
    // The host node's name never reaches the tenant.
    expect(JSON.stringify(ev)).not.toContain('host-node-7');
    expect(ev.source).toEqual({ component: 'kubelet', host: 'kosmos-vc-resources' });
    expect(ev.reportingInstance).toBe('kosmos-vc-resources');
  });

  it('keep a MicroTime to the microsecond, and strings from a watch as they came', () => {
    const ev = tenantEventFor(
      hostEvent({
        eventTime: new Date('2026-12-02T10:00:00.123Z'),
        firstTimestamp: '2026-12-02T09:00:00Z' as unknown as Date,
      }),
      hostPod,
      tenantPod,
      HOST_NS,
    )!;
    expect(ev.eventTime).toBe('2026-12-02T10:00:00.123000Z');
    expect(ev.firstTimestamp).toBe('2026-12-02T09:00:00Z');
  });

  it('are not made for other components, other kinds, or pods that are gone or were replaced', () => {
    const scheduler = hostEvent({ source: { component: 'default-scheduler' }, reportingComponent: '' });
    expect(tenantEventFor(scheduler, hostPod, tenantPod, HOST_NS)).toBeUndefined();
    const node = hostEvent({ involvedObject: { kind: 'Node', name: 'host-node-7', uid: 'n' } });
    expect(tenantEventFor(node, hostPod, tenantPod, HOST_NS)).toBeUndefined();
    expect(tenantEventFor(hostEvent(), undefined, tenantPod, HOST_NS)).toBeUndefined();
    expect(tenantEventFor(hostEvent(), hostPod, undefined, HOST_NS)).toBeUndefined();
    // An event about an earlier host pod of the same name, or for an earlier tenant pod.
    const olderHostPod = hostEvent({ involvedObject: { ...hostEvent().involvedObject, uid: 'old' } });
    expect(tenantEventFor(olderHostPod, hostPod, tenantPod, HOST_NS)).toBeUndefined();
    const newerTenantPod = { ...tenantPod, metadata: { ...tenantPod.metadata, uid: 'new' } };
    expect(tenantEventFor(hostEvent(), hostPod, newerTenantPod, HOST_NS)).toBeUndefined();
    // The /etc/hosts rewrite's container is not the tenant's; a tenant container of that name is.
    const rewrite = hostEvent({
      involvedObject: { ...hostEvent().involvedObject, fieldPath: `spec.initContainers{${HOSTS_CONTAINER}}` },
    });
    const rewritten = {
      ...hostPod,
      metadata: {
        ...hostPod.metadata,
        annotations: { ...hostPod.metadata!.annotations, [PodAnnotation.hostsRewritten]: 'true' },
      },
    };
    expect(tenantEventFor(rewrite, rewritten, tenantPod, HOST_NS)).toBeUndefined();
    expect(tenantEventFor(rewrite, hostPod, tenantPod, HOST_NS)).toBeDefined();
  });

  it('get a stable name of their own when the host named the event otherwise, within the name limit', () => {
    const long = 'p'.repeat(250);
    const longTenant = { ...tenantPod, metadata: { ...tenantPod.metadata, name: long } };
    const longHost = {
      ...hostPod,
      metadata: {
        ...hostPod.metadata,
        annotations: { ...hostPod.metadata!.annotations, [PodAnnotation.name]: long },
      },
    };
    const odd = hostEvent({ metadata: { name: 'something-else', namespace: HOST_NS } });
    const a = tenantEventFor(odd, longHost, longTenant, HOST_NS)!;
    const b = tenantEventFor(odd, longHost, longTenant, HOST_NS)!;
    expect(a.metadata.name).toBe(b.metadata.name);
    expect(a.metadata.name!.length).toBeLessThanOrEqual(253);
    expect(a.metadata.name).toMatch(/^p+\.[0-9a-f]{16}$/);
    expect(a.involvedObject.name).toBe(long);
  });
});

describe('EventSync', () => {
  it('keeps an event that came before its host pod reached the cache, and writes it once the pod is there', async () => {
    const pods = new Map<string, V1Pod>();
    const applied: string[] = [];
    const sync = new EventSync({
      hostNamespace: HOST_NS,
      tenantCore: {
        patchNamespacedEvent: ({ name }: { name: string }) => {
          applied.push(name);
          return Promise.resolve({});
        },
      } as unknown as CoreV1Api,
      hostEvents: { get: () => hostEvent() } as unknown as ListWatch<CoreV1Event>,
      hostPods: { get: (name: string) => pods.get(name) } as unknown as ListWatch<V1Pod>,
      tenantPods: { get: () => tenantPod } as unknown as ListWatch<V1Pod>,
    });
    const name = hostEvent().metadata.name!;
    await sync.sync(name);
    expect(applied).toEqual([]);
    pods.set(HOST_POD, hostPod);
    expect(sync.arrived(HOST_POD)).toEqual([name]);
    expect(sync.arrived(HOST_POD)).toEqual([]);
    await sync.sync(name);
    await sync.sync(name); // unchanged: written once
    expect(applied).toEqual(['web-1.18a2b3c4d5e6f708']);
  });
});
