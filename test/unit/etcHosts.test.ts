/**
 * A tenant pod with a subdomain finds its own tenant FQDN in /etc/hosts: the host pod's init
 * container rewrites the host kubelet's line, and every container mounts the rewritten file.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HOSTS_CONTAINER, withTenantHosts } from '../../src/clustertree/etcHosts.js';
import { hostPodResize, hostPodUpdate, tenantPodStatus } from '../../src/clustertree/runningPod.js';
import { PodAnnotation, hostPodFor, type TenantContext } from '../../src/clustertree/translate.js';

const { hostsImage: _, ...noImage } = {
  tenant: { namespace: 'team', name: 'vc1', uid: '11111111-2222-3333-4444-555555555555' },
  hostNamespace: 'kvc-team-vc1-0123456789',
  hostsImage: 'busybox:test',
};
const ctx: TenantContext = {
  tenant: { namespace: 'team', name: 'vc1', uid: '11111111-2222-3333-4444-555555555555' },
  hostNamespace: 'kvc-team-vc1-0123456789',
  hostsImage: 'busybox:test',
};

const pod = (spec: Partial<NonNullable<V1Pod['spec']>> = {}, withSubdomain = true): V1Pod => ({
  metadata: { name: 'web-0', namespace: 'shop', uid: 'u' },
  spec: {
    nodeName: 'node-a',
    hostname: 'web-0',
    ...(withSubdomain ? { subdomain: 'web' } : {}),
    containers: [{ name: 'app', image: 'app:1' }],
    ...spec,
  },
});

/** What the host kubelet writes for the host pod (pkg/kubelet/kubelet_pods.go, managedHostsFileContent). */
const kubeletHosts = `# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::1\tip6-allnodes
10.244.0.17\tweb-0.web.${ctx.hostNamespace}.svc.cluster.local\tweb-0
`;

describe('/etc/hosts of a tenant pod with a subdomain', () => {
  it('is rewritten by an init container to the tenant FQDN, which the sed of the command really does', () => {
    const spec = hostPodFor(ctx, pod(), 'node-a').spec!;
    expect(hostPodFor(ctx, pod(), 'node-a').metadata!.annotations![PodAnnotation.hostsRewritten]).toBe(
      'true',
    );
    const init = spec.initContainers![0]!;
    expect(init.name).toBe(HOSTS_CONTAINER);
    expect(init.image).toBe('busybox:test');
    expect(init.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false });
    // Run the command's sed on a copy of the kubelet's file.
    const dir = mkdtempSync(join(tmpdir(), 'hosts-'));
    let out: string;
    try {
      writeFileSync(join(dir, 'in'), kubeletHosts);
      const script = init
        .command![2]!.replace('/etc/hosts', join(dir, 'in'))
        .replace('/kosmos-vc-hosts/hosts', join(dir, 'out'));
      execFileSync('sh', ['-c', script]);
      out = readFileSync(join(dir, 'out'), 'utf8');
    } finally {
      rmSync(dir, { recursive: true });
    }
    expect(out).toContain('10.244.0.17 web-0.web.shop.svc.cluster.local\tweb-0\n');
    expect(out).not.toContain(ctx.hostNamespace);
    expect(out.split('\n').slice(0, 5)).toEqual(kubeletHosts.split('\n').slice(0, 5));
    // Every container reads the copy; the volume is the pod's own.
    expect(spec.containers[0]!.volumeMounts).toContainEqual({
      name: 'kosmos-vc-hosts',
      mountPath: '/etc/hosts',
      subPath: 'hosts',
    });
    expect(spec.volumes).toContainEqual({ name: 'kosmos-vc-hosts', emptyDir: {} });
  });

  it("runs before the tenant's init containers, which read the copy too; a container with its own /etc/hosts keeps it", () => {
    const spec = hostPodFor(
      ctx,
      pod({
        initContainers: [{ name: 'setup', image: 'setup:1' }],
        containers: [
          { name: 'app', image: 'app:1' },
          {
            name: 'own',
            image: 'own:1',
            volumeMounts: [{ name: 'h', mountPath: '/etc/hosts', subPath: 'x' }],
          },
        ],
        volumes: [{ name: 'h', configMap: { name: 'hosts' } }],
      }),
      'node-a',
    ).spec!;
    expect(spec.initContainers!.map((c) => c.name)).toEqual([HOSTS_CONTAINER, 'setup']);
    expect(spec.initContainers![1]!.volumeMounts?.[0]?.mountPath).toBe('/etc/hosts');
    expect(spec.containers[1]!.volumeMounts).toHaveLength(1);
  });

  it("keeps the pod's QoS class: a Guaranteed pod's rewrite has limits equal to requests, others none", () => {
    const best = hostPodFor(ctx, pod(), 'node-a').spec!;
    expect(best.initContainers![0]!.resources).toBeUndefined();
    const sized = { requests: { cpu: '500m', memory: '1Gi' }, limits: { cpu: '0.5', memory: '1Gi' } };
    const guaranteed = hostPodFor(
      ctx,
      pod({ containers: [{ name: 'app', image: 'a', resources: sized }] }),
      'node-a',
    ).spec!;
    const r = guaranteed.initContainers![0]!.resources!;
    expect(r.requests).toEqual(r.limits);
  });

  it('is left alone without a subdomain, an image, or where the tenant took its names', () => {
    expect(hostPodFor(ctx, pod({}, false), 'node-a').spec!.initContainers).toBeUndefined();
    expect(hostPodFor(noImage, pod(), 'node-a').spec!.initContainers).toBeUndefined();
    const taken = pod({ containers: [{ name: HOSTS_CONTAINER, image: 'x' }] }).spec!;
    expect(
      withTenantHosts(taken, { image: 'i', hostNamespace: 'h', namespace: 'n', clusterDomain: 'c' }),
    ).toEqual({ spec: taken, rewritten: false });
    // A tenant container of that name is the tenant's own: shown in its status as any other.
    const own = hostPodFor(ctx, pod({ containers: [{ name: HOSTS_CONTAINER, image: 'x' }] }), 'node-a');
    expect(own.metadata!.annotations![PodAnnotation.hostsRewritten]).toBeUndefined();
    own.status = {
      containerStatuses: [{ name: HOSTS_CONTAINER, image: 'x', imageID: '', ready: true, restartCount: 0 }],
    };
    expect(tenantPodStatus(own, pod()).containerStatuses?.map((c) => c.name)).toEqual([HOSTS_CONTAINER]);
  });

  it("is not shown to the tenant, nor compared when the tenant's pod changes", () => {
    const host = hostPodFor(ctx, pod(), 'node-a');
    host.status = {
      phase: 'Running',
      initContainerStatuses: [
        { name: HOSTS_CONTAINER, image: 'busybox:test', imageID: '', ready: true, restartCount: 0 },
      ],
      containerStatuses: [{ name: 'app', image: 'app:1', imageID: '', ready: true, restartCount: 0 }],
    };
    const status = tenantPodStatus(host, pod());
    expect(status.initContainerStatuses).toBeUndefined();
    expect(status.containerStatuses?.map((c) => c.name)).toEqual(['app']);
    // A host pod made before the rewrite existed (or with another image) is not patched for it.
    const before = hostPodFor(noImage, pod(), 'node-a');
    expect(hostPodUpdate(before, host)).toBeUndefined();
    expect(
      hostPodResize(
        before,
        hostPodFor(
          ctx,
          pod({
            containers: [{ name: 'app', image: 'app:1', resources: { limits: { cpu: '1', memory: '1Gi' } } }],
          }),
          'node-a',
        ),
      ),
    ).toEqual({
      spec: { containers: [{ name: 'app', resources: { limits: { cpu: '1', memory: '1Gi' } } }] },
    });
  });
});
