/**
 * clusterTree's pure parts: pod/Service/node translation, the keyed work queue, the resize
 * command's arithmetic, quantities.
 */
import type { V1Node, V1Pod, V1PodSpec, V1Service, V1ServicePort } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { parseQuantity } from '../../src/api/virtualCluster.js';
import { parseResizeArgs } from '../../src/cli/program.js';
import { desiredPromotion, UsageError } from '../../src/cli/resize.js';
import {
  OriginLabel,
  Promotion,
  RESOURCES_PRIORITY_CLASS,
  hostName,
  tenantHash,
  tokenSecretName,
} from '../../src/clustertree/naming.js';
import { FairShare, KeyedQueue } from '../../src/clustertree/queue.js';
import {
  PodAnnotation,
  hostPodFor,
  podHostname,
  serviceShape,
  hostServiceFor,
  podReferences,
  hostEndpointSliceFor,
  OPERATOR,
  OPERATOR_LABEL,
  type TenantContext,
} from '../../src/clustertree/translate.js';
import { PodRefused } from '../../src/clustertree/podSecurity.js';
import { isExtendedResource } from '../../src/clustertree/resources.js';
import {
  hostPodUpdate,
  hostPodResize,
  hostPortRejection,
  sameResources,
  tenantPodStatus,
} from '../../src/clustertree/runningPod.js';
import { tenantNodeFor, virtualNode } from '../../src/clustertree/tenantNodes.js';

const ctx: TenantContext = {
  tenant: { namespace: 'team', name: 'vc1', uid: '11111111-2222-3333-4444-555555555555' },
  hostNamespace: 'kvc-team-vc1-0123456789',
};

function pod(spec: Partial<V1Pod['spec']> = {}, labels: Record<string, string> = {}): V1Pod {
  return {
    metadata: { name: 'web-1', namespace: 'shop', uid: 'pod-uid', labels },
    spec: {
      nodeName: 'node-a',
      serviceAccountName: 'builder',
      containers: [
        {
          name: 'app',
          image: 'app:1',
          env: [
            { name: 'A', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'a' } } },
            { name: 'B', valueFrom: { secretKeyRef: { name: 'creds', key: 'b' } } },
            { name: 'NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
          ],
          envFrom: [{ configMapRef: { name: 'bulk' } }],
        },
      ],
      volumes: [
        { name: 'v1', configMap: { name: 'files' } },
        { name: 'v2', secret: { secretName: 'tls' } },
        {
          name: 'kube-api-access',
          projected: {
            sources: [
              { serviceAccountToken: { path: 'token', expirationSeconds: 3607 } },
              { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
              {
                downwardAPI: {
                  items: [{ path: 'namespace', fieldRef: { fieldPath: 'metadata.namespace' } }],
                },
              },
            ],
          },
        },
      ],
      imagePullSecrets: [{ name: 'registry' }],
      tolerations: [{ operator: 'Exists' }],
      nodeSelector: { disk: 'ssd' },
      priorityClassName: 'tenant-high',
      ...spec,
    },
  };
}

describe('hostPodFor', () => {
  it('translates every name the pod refers to and keeps the tenant view in annotations', () => {
    const h = hostPodFor(ctx, pod({}, { app: 'web', 'kosmos.io/tenant': 'forged' }), 'node-a');
    expect(h.metadata?.name).toBe(hostName('shop', 'web-1'));
    expect(h.metadata?.namespace).toBe(ctx.hostNamespace);
    // A tenant cannot forge origin labels: reserved keys are dropped, then ours are set.
    expect(h.metadata?.labels?.app).toBe('web');
    expect(h.metadata?.labels?.[OriginLabel.tenant]).not.toBe('forged');
    expect(h.metadata?.annotations).toMatchObject({
      [PodAnnotation.namespace]: 'shop',
      [PodAnnotation.name]: 'web-1',
      [PodAnnotation.uid]: 'pod-uid',
    });
    const c = h.spec!.containers[0]!;
    // Without a tenant API address the host's `kubernetes` variables come first, blanked.
    expect(c.env?.find((e) => e.name === 'KUBERNETES_SERVICE_HOST')).toEqual({
      name: 'KUBERNETES_SERVICE_HOST',
      value: '',
    });
    const own = c.env?.filter((e) => !e.name.startsWith('KUBERNETES_'));
    expect(own?.[0]?.valueFrom?.configMapKeyRef?.name).toBe(hostName('shop', 'cfg'));
    expect(own?.[1]?.valueFrom?.secretKeyRef?.name).toBe(hostName('shop', 'creds'));
    expect(own?.[2]?.valueFrom?.fieldRef?.fieldPath).toBe(
      `metadata.annotations['${PodAnnotation.namespace}']`,
    );
    expect(c.envFrom?.[0]?.configMapRef?.name).toBe(hostName('shop', 'bulk'));
    const [v1, v2, access] = h.spec!.volumes!;
    expect(v1?.configMap?.name).toBe(hostName('shop', 'files'));
    expect(v2?.secret?.secretName).toBe(hostName('shop', 'tls'));
    expect(access?.projected?.sources?.[0]?.secret?.name).toBe(tokenSecretName('shop', 'web-1'));
    expect(access?.projected?.sources?.[1]?.configMap?.name).toBe(hostName('shop', 'kube-root-ca.crt'));
    expect(access?.projected?.sources?.[2]?.downwardAPI?.items?.[0]?.fieldRef?.fieldPath).toContain(
      PodAnnotation.namespace,
    );
    expect(h.spec!.imagePullSecrets).toEqual([{ name: hostName('shop', 'registry') }]);
    expect(h.spec!.automountServiceAccountToken).toBe(false);
    expect(h.spec!.serviceAccountName).toBeUndefined();
  });

  it('binds to the promoted node, or leaves the choice to the host scheduler in the resources class', () => {
    const onNode = hostPodFor(ctx, pod(), 'node-a');
    expect(onNode.spec?.nodeName).toBe('node-a');
    // The tenant's own tolerations, selectors and priority do not travel to the host.
    expect(onNode.spec?.tolerations).toEqual([
      { key: Promotion.taint, operator: 'Exists', effect: 'NoSchedule' },
    ]);
    expect(onNode.spec?.nodeSelector).toBeUndefined();
    expect(onNode.spec?.priorityClassName).toBeUndefined();
    const virtual = hostPodFor(ctx, pod({ nodeName: 'kosmos-virtual-resources' }), undefined);
    expect(virtual.spec?.nodeName).toBeUndefined();
    // The host scheduler may use this tenant's promoted nodes (only its own) for them.
    expect(virtual.spec?.tolerations).toEqual([
      { key: 'kosmos.io/promoted', operator: 'Equal', value: tenantHash(ctx.tenant), effect: 'NoSchedule' },
    ]);
    expect(virtual.spec?.priorityClassName).toBe(RESOURCES_PRIORITY_CLASS);
  });

  it.each([
    ['hostNetwork', { hostNetwork: true }],
    ['hostPID', { hostPID: true }],
    ['hostPath volume', { volumes: [{ name: 'root', hostPath: { path: '/' } }] }],
    [
      'privileged container',
      { containers: [{ name: 'x', image: 'x', securityContext: { privileged: true } }] },
    ],
    ['host port', { containers: [{ name: 'x', image: 'x', ports: [{ containerPort: 80, hostPort: 80 }] }] }],
    ['gitRepo volume', { volumes: [{ name: 'src', gitRepo: { repository: 'https://example.com/x.git' } }] }],
    ['nfs volume', { volumes: [{ name: 'n', nfs: { server: 'nfs', path: '/' } }] }],
    ['persistentVolumeClaim volume', { volumes: [{ name: 'd', persistentVolumeClaim: { claimName: 'd' } }] }],
    [
      'capability SYS_ADMIN',
      { containers: [{ name: 'x', image: 'x', securityContext: { capabilities: { add: ['SYS_ADMIN'] } } }] },
    ],
    [
      'unconfined seccomp',
      {
        securityContext: { seccompProfile: { type: 'Unconfined' } },
        containers: [{ name: 'x', image: 'x' }],
      },
    ],
    [
      'procMount Unmasked',
      { containers: [{ name: 'x', image: 'x', securityContext: { procMount: 'Unmasked' } }] },
    ],
    [
      'sysctl kernel.msgmax',
      {
        securityContext: { sysctls: [{ name: 'kernel.msgmax', value: '1' }] },
        containers: [{ name: 'x', image: 'x' }],
      },
    ],
  ])('refuses %s', (what, spec) => {
    expect(() => hostPodFor(ctx, pod(spec as Partial<V1Pod['spec']>), 'node-a')).toThrow(PodRefused);
    try {
      hostPodFor(ctx, pod(spec), 'node-a');
    } catch (e) {
      expect((e as PodRefused).reason).toBe('HostAccessForbidden');
      expect((e as PodRefused).message).toContain(what);
    }
  });

  it("lets a privileged tenant use host access on its own promoted nodes only (pinning the virtual node's pods there)", () => {
    const privileged: TenantContext = { ...ctx, podSecurity: 'privileged', clusterDNS: '10.96.0.10' };
    const spec: Partial<V1Pod['spec']> = {
      hostNetwork: true,
      hostAliases: [{ ip: '1.2.3.4', hostnames: ['a.example'] }],
      containers: [{ name: 'x', image: 'x', ports: [{ containerPort: 80, hostPort: 8080 }] }],
    };
    const onNode = hostPodFor(privileged, pod(spec), 'node-a');
    expect(onNode.spec?.hostNetwork).toBe(true);
    expect(onNode.spec?.hostAliases).toEqual(spec.hostAliases);
    expect(onNode.spec?.containers[0]?.ports?.[0]?.hostPort).toBe(8080);
    // On the host network ClusterFirst resolves as the node does, as a kubelet would have it.
    expect(onNode.spec?.dnsPolicy ?? 'ClusterFirst').toBe('ClusterFirst');
    expect(onNode.spec?.dnsConfig).toBeUndefined();
    // A virtual-node pod shares host nodes: with host access it is pinned to the tenant's own nodes.
    const virtual = hostPodFor(privileged, pod(spec), undefined);
    expect(virtual.spec?.hostNetwork).toBe(true);
    expect(virtual.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution).toEqual({
      nodeSelectorTerms: [
        { matchExpressions: [{ key: Promotion.label, operator: 'In', values: [tenantHash(ctx.tenant)] }] },
      ],
    });
    expect(virtual.metadata?.annotations?.['kosmos.io/pinned-to-promoted-nodes']).toBe('true');
    // Without host access it goes to shared nodes as before.
    expect(hostPodFor(privileged, pod(), undefined).spec?.affinity).toBeUndefined();
    // A baseline tenant is refused everywhere.
    expect(() => hostPodFor(ctx, pod(spec), 'node-a')).toThrow(PodRefused);
  });
});

describe('hostPodUpdate', () => {
  const running = (
    labels: Record<string, string>,
    annotations: Record<string, string>,
    image = 'app:1',
  ): V1Pod => {
    const p = pod({}, labels);
    p.metadata!.annotations = annotations;
    p.spec!.containers[0]!.image = image;
    return hostPodFor(ctx, p, 'node-a');
  };

  it('carries the tenant annotations, never reserved ones, so fieldRefs and the downward API read them', () => {
    const h = running({}, { mysubpath: 'mypath', 'kosmos.io/tenant': 'forged' });
    expect(h.metadata!.annotations!.mysubpath).toBe('mypath');
    expect(h.metadata!.annotations!['kosmos.io/tenant']).not.toBe('forged');
  });

  it('patches labels, annotations and images a tenant changed, and removes only what it dropped', () => {
    const have = running({ a: '1', gone: 'x' }, { note: 'old', dropped: 'y' });
    // Something on the host (a CNI, say) annotated the host pod: not the tenant's to remove.
    have.metadata!.annotations!['cni.example.org/ip'] = '10.0.0.1';
    const want = running({ a: '2' }, { note: 'new' }, 'app:2');
    expect(hostPodUpdate(have, want)).toEqual({
      metadata: {
        labels: { a: '2', gone: null },
        annotations: {
          note: 'new',
          dropped: null,
          'kosmos.io/tenant-keys': JSON.stringify({ labels: ['a'], annotations: ['note'] }),
        },
      },
      spec: { containers: [{ name: 'app', image: 'app:2' }] },
    });
    expect(hostPodUpdate(want, want)).toBeUndefined();
  });

  it('removes what a tenant dropped from a host pod made before keys were recorded, or with a damaged record', () => {
    for (const record of [undefined, 'not json']) {
      const have = running({ a: '1', gone: 'x' }, { note: 'n' });
      if (record === undefined) delete have.metadata!.annotations!['kosmos.io/tenant-keys'];
      else have.metadata!.annotations!['kosmos.io/tenant-keys'] = record;
      const update = hostPodUpdate(have, running({ a: '1' }, {})) as {
        metadata: { labels: Record<string, string | null>; annotations: Record<string, string | null> };
      };
      expect(update.metadata.labels).toEqual({ gone: null });
      expect(update.metadata.annotations.note).toBeNull();
      // Never the host's own keys.
      expect(update.metadata.annotations['kosmos.io/uid']).toBeUndefined();
    }
  });

  it('compares quantities by value, and as written where they cannot be read', () => {
    expect(sameResources({ requests: { cpu: '1' } }, { requests: { cpu: '1000m' } })).toBe(true);
    expect(sameResources({ requests: { memory: '129e6' } }, { requests: { memory: '129e6' } })).toBe(true);
    expect(sameResources({}, { requests: { cpu: '0', memory: '0' } })).toBe(true);
    expect(sameResources({ requests: { cpu: '1' } }, { requests: { cpu: '2' } })).toBe(false);
  });

  it('keeps annotations host components act on (Kubernetes, CNIs, meshes) on the tenant side', () => {
    const h = running(
      {},
      { 'sidecar.istio.io/inject': 'true', 'k8s.v1.cni.cncf.io/networks': 'x', 'example.com/mine': 'y' },
    );
    expect(h.metadata!.annotations!['example.com/mine']).toBe('y');
    expect(h.metadata!.annotations!['sidecar.istio.io/inject']).toBeUndefined();
    expect(h.metadata!.annotations!['k8s.v1.cni.cncf.io/networks']).toBeUndefined();
    // Dotted keys without a domain are container runtime annotations (io.kubernetes.cri-o.*, ...).
    expect(
      running({}, { 'io.katacontainers.config.hypervisor': 'x' }).metadata!.annotations![
        'io.katacontainers.config.hypervisor'
      ],
    ).toBeUndefined();
  });

  it('asks the host for an in-place resize of exactly the containers the tenant resized', () => {
    const have = running({}, {});
    const p = pod();
    p.spec!.containers[0]!.resources = { requests: { cpu: '20m' }, limits: { cpu: '40m' } };
    expect(hostPodResize(have, p)).toEqual({
      spec: {
        containers: [{ name: 'app', resources: { requests: { cpu: '20m' }, limits: { cpu: '40m' } } }],
      },
    });
    expect(hostPodResize(have, pod())).toBeUndefined();
  });

  it("keeps a virtual-node pod's extended resources off the host, and out of its resizes and generations", () => {
    const p = pod();
    p.spec!.nodeName = 'kosmos-virtual-resources';
    p.spec!.containers[0]!.resources = {
      requests: { cpu: '10m', 'scheduling.k8s.io/foo': '2', 'example.com/gpu': '1', 'hugepages-2Mi': '2Mi' },
      limits: { 'scheduling.k8s.io/foo': '2', 'example.com/gpu': '1' },
    };
    p.metadata!.generation = 2;
    const before = structuredClone(p);
    const h = hostPodFor(ctx, p, undefined);
    // A slice is CPU and memory: what else the tenant advertised on its virtual node stays there.
    expect(h.spec!.containers[0]!.resources).toEqual({
      requests: { cpu: '10m', 'hugepages-2Mi': '2Mi' },
      limits: {},
    });
    expect(h.metadata!.annotations![PodAnnotation.tenantOnlyResources]).toBe(
      'example.com/gpu,scheduling.k8s.io/foo',
    );
    expect(p).toEqual(before); // the tenant's pod is not touched
    // What the tenant asked of the host is met: no resize, no update, its generation observed.
    expect(hostPodResize(h, p)).toBeUndefined();
    expect(hostPodUpdate(h, hostPodFor(ctx, p, undefined))).toBeUndefined();
    h.metadata!.generation = 1;
    h.status = { observedGeneration: 1 };
    expect(tenantPodStatus(h, p).observedGeneration).toBe(2);
    // A CPU resize still goes through, without the resources the host never had.
    p.spec!.containers[0]!.resources.requests!.cpu = '20m';
    expect(hostPodResize(h, p)).toEqual({
      spec: {
        containers: [
          { name: 'app', resources: { requests: { cpu: '20m', 'hugepages-2Mi': '2Mi' }, limits: {} } },
        ],
      },
    });
    expect(tenantPodStatus(h, p).observedGeneration).toBeUndefined();
    // On a promoted node the host kubelet gets them as asked (its device plugins serve what it has).
    const onNode = hostPodFor(ctx, before, 'node-a');
    expect(onNode.spec!.containers[0]!.resources).toEqual(before.spec!.containers[0]!.resources);
    expect(onNode.metadata!.annotations![PodAnnotation.tenantOnlyResources]).toBeUndefined();
  });

  it('tells extended resources from native ones as Kubernetes does', () => {
    for (const name of ['example.com/gpu', 'nvidia.com/gpu', 'scheduling.k8s.io/foo'])
      expect(isExtendedResource(name)).toBe(true);
    for (const name of [
      'cpu',
      'memory',
      'hugepages-2Mi',
      'kubernetes.io/x',
      'foo.kubernetes.io/x',
      'requests.a/b',
    ])
      expect(isExtendedResource(name)).toBe(false);
  });

  it('follows a new activeDeadlineSeconds', () => {
    const have = running({}, {});
    const p = pod();
    p.spec!.activeDeadlineSeconds = 5;
    expect(hostPodUpdate(have, hostPodFor(ctx, p, 'node-a'))).toEqual({ spec: { activeDeadlineSeconds: 5 } });
  });
});

describe('podHostname', () => {
  it('is what a kubelet names the pod, as a DNS label: dotted names (a Deployment named a.b) are not refused', () => {
    expect(podHostname('web-1')).toBe('web-1');
    expect(podHostname('simpletest.deployment-56475c867-abcde')).toBe(
      'simpletest-deployment-56475c867-abcde',
    );
    expect(podHostname(`${'a'.repeat(62)}-b`)).toBe('a'.repeat(62));
    const p = pod();
    p.metadata!.name = 'simpletest.deployment-56475c867-abcde';
    expect(hostPodFor(ctx, p, 'node-a').spec!.hostname).toBe('simpletest-deployment-56475c867-abcde');
    p.metadata!.name = 'x'.repeat(80);
    expect(hostPodFor(ctx, p, 'node-a').spec!.hostname).toBe('x'.repeat(63));
  });
});

describe('podReferences', () => {
  it('lists every ConfigMap and Secret the pod needs, and its service account', () => {
    const refs = podReferences(pod());
    expect([...refs.configMaps].sort()).toEqual(['bulk', 'cfg', 'files', 'kube-root-ca.crt']);
    expect([...refs.secrets].sort()).toEqual(['creds', 'registry', 'tls']);
    expect(refs.tokens).toEqual([{ key: 'token', serviceAccount: 'builder', expirationSeconds: 3607 }]);
  });

  it('keeps a token per audience and lifetime, and each projection reads its own', () => {
    const p = pod();
    p.spec!.volumes!.unshift({
      name: 'oidc',
      projected: {
        sources: [
          { serviceAccountToken: { path: 'a', audience: 'vault', expirationSeconds: 600 } },
          // The same audience and lifetime again: the same token.
          { serviceAccountToken: { path: 'b', audience: 'vault', expirationSeconds: 600 } },
        ],
      },
    });
    const tokens = podReferences(p).tokens;
    expect(tokens.map((t) => t.key)).toEqual(['token', expect.stringMatching(/^token-[0-9a-f]{12}$/)]);
    expect(tokens[0]).toMatchObject({ audience: 'vault', expirationSeconds: 600 });
    expect(tokens[1]).toMatchObject({ expirationSeconds: 3607 });
    expect(tokens[1]).not.toHaveProperty('audience');
    const host = hostPodFor(ctx, p, 'node-a');
    const keyOf = (volume: string) =>
      host
        .spec!.volumes!.find((v) => v.name === volume)!
        .projected!.sources!.flatMap((s) =>
          s.secret ? s.secret.items!.map((i) => `${i.path}=${i.key}`) : [],
        );
    expect(keyOf('oidc')).toEqual(['a=token', 'b=token']);
    expect(keyOf('kube-api-access')).toEqual([`token=${tokens[1]!.key}`]);
  });
});

describe('status and nodes', () => {
  it('keeps the tenant conditions of readiness gates, and Ready waits for them', () => {
    const hostPod: V1Pod = {
      status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
    };
    const tenantPod: V1Pod = {
      spec: { containers: [], readinessGates: [{ conditionType: 'example.com/lb' }] },
      status: { conditions: [{ type: 'example.com/lb', status: 'False' }] },
    };
    const waiting = tenantPodStatus(hostPod, tenantPod);
    expect(waiting.conditions).toEqual([
      expect.objectContaining({ type: 'Ready', status: 'False', reason: 'ReadinessGatesNotReady' }),
      { type: 'example.com/lb', status: 'False' },
    ]);
    tenantPod.status!.conditions![0]!.status = 'True';
    expect(tenantPodStatus(hostPod, tenantPod).conditions?.find((c) => c.type === 'Ready')?.status).toBe(
      'True',
    );
  });

  it("keeps the tenant's DisruptionTarget (its eviction) over the host's conditions", () => {
    const hostPod: V1Pod = {
      status: { phase: 'Failed', conditions: [{ type: 'Ready', status: 'False' }] },
    };
    const evicted = { type: 'DisruptionTarget', status: 'True', reason: 'EvictionByEvictionAPI' };
    const tenantPod: V1Pod = { spec: { containers: [] }, status: { conditions: [evicted] } };
    expect(tenantPodStatus(hostPod, tenantPod).conditions).toEqual([
      { type: 'Ready', status: 'False' },
      evicted,
    ]);
    expect(tenantPodStatus(hostPod, { spec: { containers: [] } }).conditions).toEqual([
      { type: 'Ready', status: 'False' },
    ]);
    // PodScheduled is the tenant scheduler's: a virtual-node pod the host has not placed yet is
    // bound in the tenant all the same. Without one of its own, the host's shows.
    const unplaced: V1Pod = {
      status: {
        phase: 'Pending',
        conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable' }],
      },
    };
    const bound = { type: 'PodScheduled', status: 'True' };
    expect(
      tenantPodStatus(unplaced, { spec: { containers: [] }, status: { conditions: [bound] } }).conditions,
    ).toEqual([bound]);
    expect(tenantPodStatus(unplaced, { spec: { containers: [] } }).conditions).toEqual(
      unplaced.status!.conditions,
    );
    // A pod bound directly has no PodScheduled of the tenant's: once the host places it, it shows.
    const placed: V1Pod = { status: { phase: 'Running', conditions: [bound] } };
    expect(
      tenantPodStatus(placed, {
        spec: { containers: [] },
        status: { conditions: unplaced.status!.conditions! },
      }).conditions,
    ).toEqual([bound]);
  });

  it('copies the host pod status fields the tenant shows', () => {
    const status = tenantPodStatus({
      status: { phase: 'Running', podIP: '10.0.0.7', hostIP: '192.0.2.1', qosClass: 'BestEffort' },
    });
    expect(status).toEqual({ phase: 'Running', podIP: '10.0.0.7', hostIP: '192.0.2.1' });
  });

  it("leaves the host LimitRange's zero requests out of container statuses", () => {
    const tenant: V1Pod = {
      spec: {
        containers: [
          { name: 'c', image: 'i', resources: { requests: { cpu: '2m' }, limits: { cpu: '10m' } } },
        ],
      },
    };
    const host: V1Pod = {
      status: {
        containerStatuses: [
          {
            name: 'c',
            image: 'i',
            imageID: '',
            ready: true,
            restartCount: 0,
            allocatedResources: { cpu: '2m', memory: '0' },
            resources: { requests: { cpu: '2m', memory: '0' }, limits: { cpu: '10m' } },
          },
        ],
      },
    };
    const c = tenantPodStatus(host, tenant).containerStatuses![0]!;
    expect(c.allocatedResources).toEqual({ cpu: '2m' });
    expect(c.resources).toEqual({ requests: { cpu: '2m' }, limits: { cpu: '10m' } });
  });

  it('rejects a pod bound to the virtual node directly whose host ports are taken, as a kubelet does, and only that', () => {
    const pending = (message: string, nodeName?: string): V1Pod => ({
      spec: { containers: [], ...(nodeName ? { nodeName } : {}) },
      status: {
        phase: 'Pending',
        conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message }],
      },
    });
    const direct: V1Pod = { spec: { containers: [] } };
    const ports =
      "0/3 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 2 node(s) had untolerated taint {kosmos.io/promoted: a}.";
    expect(hostPortRejection(pending(ports), direct)).toBe(
      "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
    );
    // Still directly bound once the host's PodScheduled=False shows in the tenant.
    expect(hostPortRejection(pending(ports), { ...direct, status: pending(ports).status! })).toBeDefined();
    // Placed by the tenant scheduler, which cannot see host ports: it waits (no endless replacements).
    const placed: V1Pod = { ...direct, status: { conditions: [{ type: 'PodScheduled', status: 'True' }] } };
    expect(hostPortRejection(pending(ports), placed)).toBeUndefined();
    // Some node short of CPU or room: that frees up, it waits.
    const mixed =
      "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't have free ports for the requested pod ports.";
    expect(hostPortRejection(pending(mixed), direct)).toBeUndefined();
    expect(
      hostPortRejection(pending('0/1 nodes are available: 1 Insufficient cpu.'), direct),
    ).toBeUndefined();
    // Placed already (the host kubelet judges it then), or not refused by the scheduler.
    expect(hostPortRejection(pending(ports, 'node-a'), direct)).toBeUndefined();
    expect(
      hostPortRejection({ spec: { containers: [] }, status: { phase: 'Pending' } }, direct),
    ).toBeUndefined();
  });

  it("reports the tenant's generation as observed once the host kubelet has the tenant's spec", () => {
    const tenant = (generation: number, image: string): V1Pod => ({
      metadata: { generation },
      spec: { containers: [{ name: 'c', image }] },
      status: { observedGeneration: 1 },
    });
    const host = (generation: number, observed: number, image: string): V1Pod => ({
      metadata: { generation },
      spec: { containers: [{ name: 'c', image }] },
      status: {
        observedGeneration: observed,
        conditions: [{ type: 'Ready', status: 'True', observedGeneration: observed }],
      },
    });
    // The host kubelet saw the host pod's spec, which holds the tenant's image: generation 3 seen.
    const seen = tenantPodStatus(host(7, 7, 'b'), tenant(3, 'b'));
    expect(seen.observedGeneration).toBe(3);
    expect(seen.conditions?.[0]?.observedGeneration).toBe(3);
    // The image change has not reached the host pod yet: still the last one observed.
    expect(tenantPodStatus(host(7, 7, 'a'), tenant(3, 'b')).observedGeneration).toBe(1);
    // The host kubelet has not seen the latest host spec yet.
    expect(tenantPodStatus(host(8, 7, 'b'), tenant(3, 'b')).observedGeneration).toBe(1);
  });

  it('shows a promoted node with its capacity and OS labels, without host roles or kosmos labels', () => {
    const host: V1Node = {
      metadata: {
        name: 'node-a',
        labels: {
          'kubernetes.io/os': 'linux',
          'node-role.kubernetes.io/worker': '',
          [Promotion.label]: 'abc',
        },
      },
      status: {
        allocatable: { cpu: '8', memory: '32Gi' },
        conditions: [{ type: 'Ready', status: 'True' }],
      },
    };
    const n = tenantNodeFor(host, new Date());
    expect(n.metadata?.labels?.['kubernetes.io/os']).toBe('linux');
    expect(n.metadata?.labels?.['node-role.kubernetes.io/worker']).toBeUndefined();
    expect(n.metadata?.labels?.[Promotion.label]).toBeUndefined();
    expect(n.status?.allocatable).toEqual({ cpu: '8', memory: '32Gi' });
    expect(n.status?.conditions?.[0]?.status).toBe('True');
  });

  it('sees a change of session affinity or of publishing unready pods as a change of the Service', () => {
    const base: V1Service = { metadata: { name: 'web', namespace: 'shop' }, spec: { selector: { a: 'b' } } };
    const sticky: V1Service = { ...base, spec: { ...base.spec, sessionAffinity: 'ClientIP' } };
    expect(serviceShape(base)).toBe(
      serviceShape({ ...base, spec: { ...base.spec, sessionAffinity: 'None' } }),
    );
    expect(serviceShape(sticky)).not.toBe(serviceShape(base));
    expect(serviceShape({ ...base, spec: { ...base.spec, publishNotReadyAddresses: true } })).not.toBe(
      serviceShape(base),
    );
    // The host copy carries the affinity, so the host's kube-proxy keeps clients on one pod.
    expect(hostServiceFor(ctx, sticky)?.spec?.sessionAffinity).toBe('ClientIP');
  });

  it('gives a Service a host counterpart selecting the translated pods of its namespace only', () => {
    const svc = hostServiceFor(ctx, {
      metadata: { name: 'web', namespace: 'shop', uid: 'u' },
      spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }], type: 'NodePort' },
    });
    expect(svc?.metadata?.name).toBe(hostName('shop', 'web'));
    // A NodePort answers on the host's node ports (the tenant Service then takes them).
    expect(svc?.spec?.type).toBe('NodePort');
    expect(svc?.spec?.selector).toMatchObject({ app: 'web', [OriginLabel.tenantNamespace]: 'shop' });
    const plain = hostServiceFor(ctx, {
      metadata: { name: 'api', namespace: 'shop', uid: 'u2' },
      spec: { selector: { app: 'api' }, ports: [{ port: 80 }] },
    });
    expect(plain?.spec?.type).toBe('ClusterIP');
    // Without a selector: a host Service without one either (its endpoints are mirrored).
    const manual = hostServiceFor(ctx, {
      metadata: { name: 'x', namespace: 'shop', uid: 'u3' },
      spec: { ports: [{ port: 80 }] },
    });
    expect(manual?.spec?.selector).toBeUndefined();
    expect(
      hostServiceFor(ctx, {
        metadata: { name: 'e', namespace: 'shop', uid: 'u4' },
        spec: { type: 'ExternalName', externalName: 'example.org' },
      }),
    ).toBeUndefined();
    // The operator's own (the tenant kube-dns) is left alone.
    expect(
      hostServiceFor(ctx, {
        metadata: {
          name: 'kube-dns',
          namespace: 'kube-system',
          uid: 'u5',
          labels: { [OPERATOR_LABEL]: OPERATOR },
        },
        spec: { ports: [{ port: 53 }] },
      }),
    ).toBeUndefined();
  });

  it("mirrors a selector-less Service's EndpointSlice with only the host's own addresses", () => {
    const sl = hostEndpointSliceFor(
      ctx,
      {
        metadata: {
          name: 'manual-1',
          namespace: 'shop',
          uid: 's1',
          labels: { 'kubernetes.io/service-name': 'manual' },
        },
        addressType: 'IPv4',
        ports: [{ port: 80, protocol: 'TCP' }],
        endpoints: [
          { addresses: ['10.244.0.7'] },
          { addresses: ['192.0.2.99'] },
          { addresses: ['10.244.0.1'] },
        ],
      },
      hostName('shop', 'manual'),
      ['10.244.0.0/24'],
    );
    expect(sl.metadata?.labels?.['kubernetes.io/service-name']).toBe(hostName('shop', 'manual'));
    expect(sl.endpoints?.map((e) => e.addresses)).toEqual([['10.244.0.7'], ['10.244.0.1']]);
  });

  it("points a tenant node's kubelet address and port at clusterTree's endpoint", () => {
    const n = virtualNode('v', { cpu: '1', memory: '1Gi' }, new Date(), {
      address: '127.0.0.1',
      port: 23456,
      addressType: 'InternalDNS',
    });
    expect(n.status?.addresses).toEqual([
      { type: 'InternalIP', address: '127.0.0.1' },
      { type: 'InternalDNS', address: '127.0.0.1' },
      { type: 'Hostname', address: 'v' },
    ]);
    expect(n.status?.daemonEndpoints?.kubeletEndpoint?.Port).toBe(23456);
    // With a node address (where the host's node ports answer), that is its InternalIP.
    const reachable = virtualNode(
      'v',
      { cpu: '1', memory: '1Gi' },
      new Date(),
      { address: '127.0.0.1', port: 23456, addressType: 'InternalDNS' },
      '10.244.0.1',
    );
    expect(reachable.status?.addresses?.slice(0, 2)).toEqual([
      { type: 'InternalIP', address: '10.244.0.1' },
      { type: 'InternalDNS', address: '127.0.0.1' },
    ]);
    // A promoted node keeps its host InternalIP (host ports answer there); the endpoint is InternalDNS,
    // which the tenant apiserver prefers.
    const promoted = tenantNodeFor(
      { metadata: { name: 'n' }, status: { addresses: [{ type: 'InternalIP', address: '10.244.0.1' }] } },
      new Date(),
      { address: '127.0.0.1', port: 23456, addressType: 'InternalDNS' },
    );
    expect(promoted.status?.addresses).toEqual([
      { type: 'InternalIP', address: '10.244.0.1' },
      { type: 'InternalDNS', address: '127.0.0.1' },
      { type: 'Hostname', address: 'n' },
    ]);
    // A tenant whose apiserver was started before (InternalIP first) keeps the endpoint there.
    const older = tenantNodeFor(
      { metadata: { name: 'n' }, status: { addresses: [{ type: 'InternalIP', address: '10.244.0.1' }] } },
      new Date(),
      { address: '127.0.0.1', port: 23456 },
    );
    expect(older.status?.addresses?.[0]).toEqual({ type: 'InternalIP', address: '127.0.0.1' });
  });
});

describe('what a tenant pod sees of its cluster', () => {
  const net = { ...ctx, tenantApi: { clusterIP: '10.100.0.7', port: 443 }, clusterDNS: '10.100.0.53' };
  const svc = (name: string, ns: string, ip: string, ports: V1ServicePort[]): V1Service => ({
    metadata: { name, namespace: ns },
    spec: { clusterIP: ip, ports },
  });
  const pod = (spec: Partial<V1PodSpec> = {}): V1Pod => ({
    metadata: { name: 'p', namespace: 'shop', uid: 'u' },
    spec: {
      nodeName: 'n',
      containers: [{ name: 'c', image: 'i', env: [{ name: 'OWN', value: '1' }] }],
      ...spec,
    },
  });
  const services = [
    svc('my-db', 'shop', '10.100.1.1', [{ name: 'sql', port: 5432, protocol: 'TCP' }]),
    svc('elsewhere', 'other', '10.100.1.2', [{ port: 80 }]),
    svc('headless', 'shop', 'None', [{ port: 80 }]),
  ];

  it("gives containers the tenant's kubernetes Service and the namespace's Services, as a kubelet names them", () => {
    const env = hostPodFor(net, pod(), 'n', services).spec!.containers[0]!.env!;
    const get = (n: string) => env.find((e) => e.name === n)?.value;
    expect(get('KUBERNETES_SERVICE_HOST')).toBe('10.100.0.7');
    expect(get('KUBERNETES_SERVICE_PORT')).toBe('443');
    expect(get('KUBERNETES_PORT_443_TCP_ADDR')).toBe('10.100.0.7');
    expect(get('MY_DB_SERVICE_HOST')).toBe('10.100.1.1');
    expect(get('MY_DB_SERVICE_PORT_SQL')).toBe('5432');
    expect(get('MY_DB_PORT')).toBe('tcp://10.100.1.1:5432');
    expect(get('ELSEWHERE_SERVICE_HOST')).toBeUndefined();
    expect(get('HEADLESS_SERVICE_HOST')).toBeUndefined();
    // The container's own variables come last, so they win and $(VAR) references resolve.
    expect(env.at(-1)).toEqual({ name: 'OWN', value: '1' });
    expect(hostPodFor(net, pod(), 'n', services).spec!.enableServiceLinks).toBe(false);
  });

  it('leaves service links out when the pod turns them off, but never the kubernetes Service', () => {
    const env = hostPodFor(net, pod({ enableServiceLinks: false }), 'n', services).spec!.containers[0]!.env!;
    expect(env.some((e) => e.name.startsWith('MY_DB'))).toBe(false);
    expect(env.some((e) => e.name === 'KUBERNETES_SERVICE_HOST')).toBe(true);
    const own = pod({
      containers: [{ name: 'c', image: 'i', env: [{ name: 'KUBERNETES_SERVICE_HOST', value: 'x' }] }],
    });
    const overridden = hostPodFor(net, own, 'n', services).spec!.containers[0]!.env!;
    expect(overridden.filter((e) => e.name === 'KUBERNETES_SERVICE_HOST')).toEqual([
      { name: 'KUBERNETES_SERVICE_HOST', value: 'x' },
    ]);
  });

  it("resolves through the tenant's DNS with the tenant's search path; Default and None stay", () => {
    const first = hostPodFor(
      net,
      pod({ dnsConfig: { searches: ['corp.example'], options: [{ name: 'ndots', value: '2' }] } }),
      'n',
    );
    expect(first.spec!.dnsPolicy).toBe('None');
    expect(first.spec!.dnsConfig).toEqual({
      nameservers: ['10.100.0.53'],
      searches: ['shop.svc.cluster.local', 'svc.cluster.local', 'cluster.local', 'corp.example'],
      options: [{ name: 'ndots', value: '2' }],
    });
    expect(hostPodFor(net, pod({ dnsPolicy: 'Default' }), 'n').spec!.dnsPolicy).toBe('Default');
    const none = hostPodFor(net, pod({ dnsPolicy: 'None', dnsConfig: { nameservers: ['1.2.3.4'] } }), 'n');
    expect(none.spec!.dnsConfig).toEqual({ nameservers: ['1.2.3.4'] });
  });
});

describe('KeyedQueue', () => {
  it('never runs one key twice at once, coalesces events, and retries failures with backoff', async () => {
    const running = new Set<string>();
    const runs: string[] = [];
    let failOnce = true;
    let overlap = false;
    const q = new KeyedQueue({
      concurrency: 4,
      baseDelayMs: 10,
      handle: async (key) => {
        if (running.has(key)) overlap = true;
        running.add(key);
        runs.push(key);
        await new Promise((r) => setTimeout(r, 20));
        running.delete(key);
        if (key === 'b' && failOnce) {
          failOnce = false;
          throw new Error('transient');
        }
      },
    });
    q.add('a');
    q.add('a'); // waiting: coalesced
    q.add('b');
    await new Promise((r) => setTimeout(r, 5));
    q.add('a'); // running: runs once more afterwards
    await q.idle();
    expect(overlap).toBe(false);
    expect(runs.filter((k) => k === 'a')).toHaveLength(2);
    expect(runs.filter((k) => k === 'b')).toHaveLength(2); // failed, then retried
    await q.stop();
  });

  it('shares slots between tenants in turn: a quiet tenant waits one turn, not a noisy one’s backlog', async () => {
    const share = new FairShare(2);
    const order: string[] = [];
    const releases: (() => void)[] = [];
    const take = (tenant: string, n: number) =>
      Array.from({ length: n }, (_, i) =>
        share.acquire(tenant).then((release) => {
          order.push(`${tenant}${i}`);
          releases.push(release);
        }),
      );
    const noisy = take('noisy', 10);
    await Promise.resolve();
    await Promise.resolve();
    expect(order).toEqual(['noisy0', 'noisy1']); // the two slots
    const quiet = take('quiet', 2);
    // Each release grants the next turn: quiet's first comes right after noisy's next.
    for (let i = 0; i < 4; i++) {
      releases.shift()!();
      await new Promise((r) => setImmediate(r));
    }
    expect(order.slice(2, 6)).toEqual(['noisy2', 'quiet0', 'noisy3', 'quiet1']);
    while (releases.length > 0) {
      releases.shift()!();
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all([...noisy, ...quiet]);
    expect(order).toHaveLength(12);
    // A release called twice frees one slot only.
    const r1 = await share.acquire('x');
    r1();
    r1();
    const [a, b] = await Promise.all([share.acquire('x'), share.acquire('y')]);
    let third = false;
    void share.acquire('z').then(() => (third = true));
    await new Promise((r) => setImmediate(r));
    expect(third).toBe(false);
    a();
    await new Promise((r) => setImmediate(r));
    expect(third).toBe(true);
    b();
  });

  it('a queue with a share holds a slot for each sync', async () => {
    const share = new FairShare(1);
    let inFlight = 0;
    let most = 0;
    const queue = (tenant: string) =>
      new KeyedQueue({
        concurrency: 4,
        share: { share, tenant },
        handle: async () => {
          most = Math.max(most, ++inFlight);
          await new Promise((r) => setTimeout(r, 2));
          inFlight--;
        },
      });
    const [a, b] = [queue('a'), queue('b')];
    for (const k of ['1', '2', '3']) {
      a.add(k);
      b.add(k);
    }
    await Promise.all([a.idle(), b.idle()]);
    expect(most).toBe(1);
    expect(a.processed + b.processed).toBe(6);
  });

  it('stop() releases whoever waits for the queue to empty', async () => {
    const q = new KeyedQueue({ concurrency: 1, handle: () => new Promise<void>(() => undefined) });
    q.add('hung');
    q.add('next');
    let idle = false;
    const waiting = q.idle().then(() => (idle = true));
    await new Promise((r) => setImmediate(r));
    expect(idle).toBe(false);
    await q.stop(10);
    await waiting;
    expect(idle).toBe(true);
    await q.idle(); // and a later wait does not hang either
  });

  it('a key waiting for its turn at a shared slot when the queue stops is never synced', async () => {
    const share = new FairShare(1);
    const holder = await share.acquire('other');
    const runs: string[] = [];
    const q = new KeyedQueue({
      concurrency: 2,
      share: { share, tenant: 't' },
      handle: (k) => {
        runs.push(k);
        return Promise.resolve();
      },
    });
    q.add('k');
    await q.stop(); // nothing in its handler: resolves at once
    holder();
    await new Promise((r) => setImmediate(r));
    expect(runs).toEqual([]);
    // Its turn was handed back: the slot is free for others.
    const next = await share.acquire('other');
    next();
  });

  it('stop() takes no more keys and resolves once the syncs under way have ended', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const runs: string[] = [];
    const q = new KeyedQueue({
      concurrency: 1,
      handle: async (k) => {
        runs.push(k);
        if (k === 'a') await held;
      },
    });
    q.add('a');
    q.add('b'); // waiting behind a: dropped by stop
    let stopped = false;
    const stopping = q.stop().then(() => (stopped = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(stopped).toBe(false);
    q.add('c');
    release();
    await stopping;
    expect(runs).toEqual(['a']);
    // A sync that hangs does not hold a stop past its grace.
    const hung = new KeyedQueue({ concurrency: 1, handle: () => new Promise<void>(() => undefined) });
    hung.add('x');
    const t0 = performance.now();
    await hung.stop(50);
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

describe('resize arithmetic', () => {
  it('adds and removes nodes, sets and drops resources', () => {
    const now = { nodes: ['a', 'b'], resources: { cpu: 4 } };
    expect(desiredPromotion(now, parseResizeArgs(['vc', '--add-node', 'c', '--remove-node', 'a']))).toEqual({
      nodes: ['b', 'c'],
      resources: { cpu: 4 },
    });
    expect(desiredPromotion(now, parseResizeArgs(['ns/vc', '--memory', '8Gi']))).toEqual({
      nodes: ['a', 'b'],
      resources: { cpu: 4, memory: '8Gi' },
    });
    expect(desiredPromotion(now, parseResizeArgs(['vc', '--nodes', 'x,y', '--no-resources']))).toEqual({
      nodes: ['x', 'y'],
    });
    expect(parseResizeArgs(['ns/vc'])).toMatchObject({ namespace: 'ns', name: 'vc' });
  });

  it('rejects bad input before anything is sent', () => {
    expect(() => desiredPromotion(undefined, parseResizeArgs(['vc', '--cpu', 'lots']))).toThrow(UsageError);
    expect(() => desiredPromotion(undefined, parseResizeArgs(['vc', '--add-node', 'Not_A_Node']))).toThrow(
      /node name/,
    );
    expect(() => parseResizeArgs(['vc', '--cpu', '2', '--no-resources'])).toThrow(UsageError);
    expect(() => parseResizeArgs([])).toThrow(UsageError);
  });

  it('parses quantities', () => {
    expect(parseQuantity('500m')).toBe(0.5);
    expect(parseQuantity('8Gi')).toBe(8 * 2 ** 30);
    expect(parseQuantity('2')).toBe(2);
    expect(parseQuantity(3)).toBe(3);
    expect(parseQuantity('1k')).toBe(1000);
    expect(parseQuantity('lots')).toBeNaN();
  });
});
