import { describe, expect, it } from 'vitest';
import type { Binaries } from '../../src/runtime/binaries.js';
import { apiserverSpec, placeOnMachine, type ControlPlaneLayout } from '../../src/runtime/controlPlane.js';
import { parse } from 'yaml';
import { hostPath, parseKubeletPath } from '../../src/clustertree/kubeletServer.js';
import {
  MAX_OPEN_FILES,
  cniConfig,
  containerdConfig,
  registryConfig,
  registryHosts,
  kubeProxyConfig,
  kubeletConfig,
  type NodeLayout,
} from '../../src/node/config.js';

const layout: NodeLayout = {
  name: 'real-node-0',
  dir: '/state/host/node',
  bridge: 'kvc0',
  nodeIP: '10.244.0.1',
  podCIDR: '10.244.0.0/24',
  clusterCIDR: '10.244.0.0/16',
  serviceCIDR: '10.96.0.0/12',
  clusterDNS: '10.96.0.10',
  clusterDomain: 'cluster.local',
  ports: {
    kubelet: 21001,
    kubeletHealthz: 21002,
    proxyHealthz: 21003,
    proxyMetrics: 21004,
    containerdMetrics: 21005,
    registry: 21006,
  },
  registry: { storage: '/cache/images/registry', mirrors: ['registry.k8s.io'] },
  pauseImage: 'registry.k8s.io/pause:3.10.2',
  cniBinDir: '/usr/lib/cni',
  runc: '/usr/sbin/runc',
  shimDir: '/cache/containerd/bin',
  pki: { ca: '/state/host/node/pki/ca.crt', servingCert: '/s.crt', servingKey: '/s.key' },
  kubeletKubeconfig: '/state/host/node/kubelet.conf',
  proxyKubeconfig: '/state/host/node/kube-proxy.conf',
};

describe('real node configuration', () => {
  it('keeps containerd entirely below the node directory', () => {
    const toml = containerdConfig(layout);
    const paths = [...toml.matchAll(/"(\/[^"]*)"/g)].map((m) => m[1]!);
    const outside = paths.filter(
      (p) => !p.startsWith(`${layout.dir}/`) && p !== layout.cniBinDir && p !== layout.runc,
    );
    expect(outside).toEqual([]);
    expect(toml).toContain('SystemdCgroup = false');
    expect(toml).toContain(`sandbox = "${layout.pauseImage}"`);
  });

  it('resolves every registry on loopback: the stored ones by their folder, any other to nothing', () => {
    const toml = containerdConfig(layout);
    expect(toml).toContain(`config_path = "${layout.dir}/containerd/certs.d"`);
    const hosts = registryHosts(layout);
    expect(Object.keys(hosts).sort()).toEqual(['_default', 'registry.k8s.io']);
    for (const text of Object.values(hosts)) {
      // Every URL a pull may try, the fallback `server` included, is the loopback registry.
      const urls = [...text.matchAll(/"(https?:\/\/[^"]*)"/g)].map((m) => m[1]!);
      expect(urls.length).toBeGreaterThan(0);
      for (const u of urls) expect(new URL(u).host).toBe('127.0.0.1:21006');
    }
    expect(hosts['registry.k8s.io']).toContain('[host."http://127.0.0.1:21006/v2/registry.k8s.io"]');
    expect(hosts['registry.k8s.io']).toContain('override_path = true');
    const registry = parse(registryConfig(layout)) as {
      storage: { maintenance: { readonly: { enabled: boolean } } };
      http: { addr: string };
    };
    expect(registry.storage.maintenance.readonly.enabled).toBe(true);
    expect(registry.http.addr).toBe('127.0.0.1:21006');
  });

  it('gives pods one bridge with the node address as gateway and no masquerade', () => {
    const cni = JSON.parse(cniConfig(layout)) as { plugins: Record<string, unknown>[] };
    const bridge = cni.plugins[0] as {
      bridge: string;
      ipMasq: boolean;
      ipam: { ranges: unknown[][]; dataDir: string };
    };
    expect(bridge.bridge).toBe('kvc0');
    expect(bridge.ipMasq).toBe(false);
    expect(bridge.ipam.ranges[0]).toEqual([{ subnet: '10.244.0.0/24', gateway: '10.244.0.1' }]);
    expect(bridge.ipam.dataDir.startsWith(layout.dir)).toBe(true);
  });

  it('runs kubelet with cgroupfs on cgroup v1, within the open-file limit, never collecting images', () => {
    const k = parse(kubeletConfig(layout)) as Record<string, unknown>;
    expect(k.cgroupDriver).toBe('cgroupfs');
    expect(k.failCgroupV1).toBe(false);
    expect(k.maxOpenFiles).toBeLessThanOrEqual(MAX_OPEN_FILES);
    expect(k.imageGCHighThresholdPercent).toBe(100);
    expect(k.clusterDNS).toEqual(['10.96.0.10']);
    expect((k.authentication as { anonymous: { enabled: boolean } }).anonymous.enabled).toBe(false);
    expect(String(k.podLogsDir).startsWith(layout.dir)).toBe(true);
  });

  it('answers NodePorts on the node address only', () => {
    const p = parse(kubeProxyConfig(layout)) as Record<string, unknown>;
    expect(p.nodePortAddresses).toEqual(['10.244.0.1/32']);
    expect(p.mode).toBe('iptables');
  });
});

describe('kubelet endpoint paths', () => {
  const host = { namespace: 'kvc-ns-vc-abc', name: 'web-x-default-123' };

  it('maps logs with their options onto the host pod', () => {
    const r = parseKubeletPath('/containerLogs/default/web/app')!;
    expect(r).toEqual({ verb: 'containerLogs', namespace: 'default', pod: 'web', container: 'app' });
    expect(hostPath(r, host, new URLSearchParams('follow=true&previous=true&tailLines=5'))).toBe(
      '/api/v1/namespaces/kvc-ns-vc-abc/pods/web-x-default-123/log?follow=true&previous=true&tailLines=5&container=app',
    );
  });

  it('maps exec and attach, with and without a pod uid', () => {
    const e = parseKubeletPath('/exec/default/web/0b5c-uid/app')!;
    expect(e.container).toBe('app');
    expect(
      hostPath(e, host, new URLSearchParams('command=sh&command=-c&command=echo+hi&input=1&output=1&tty=0')),
    ).toBe(
      '/api/v1/namespaces/kvc-ns-vc-abc/pods/web-x-default-123/exec?command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=false&container=app',
    );
    expect(parseKubeletPath('/attach/default/web/app')?.verb).toBe('attach');
  });

  it('maps port-forward ports and refuses anything else', () => {
    const f = parseKubeletPath('/portForward/default/web')!;
    expect(hostPath(f, host, new URLSearchParams('port=8080,9090'))).toBe(
      '/api/v1/namespaces/kvc-ns-vc-abc/pods/web-x-default-123/portforward?ports=8080&ports=9090',
    );
    for (const p of ['/pods', '/run/default/web/app', '/containerLogs/default/web', '/stats/summary', '/'])
      expect(parseKubeletPath(p)).toBeUndefined();
  });
});

describe('tenant API server flags', () => {
  const base: ControlPlaneLayout = {
    id: 't',
    dir: '/state/t',
    address: '127.0.0.1',
    ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
    serviceCIDR: '10.96.0.0/12',
  };
  const flag = (l: ControlPlaneLayout, name: string) =>
    apiserverSpec(placeOnMachine(l), { kubeApiserver: '/bin/kube-apiserver' } as Binaries).args.find((a) =>
      a.startsWith(`--${name}=`),
    );

  it('keeps `kubernetes` endpoints at the node address pods reach, and none where there is no such address', () => {
    const onNode = { ...base, bindAddress: '0.0.0.0', advertiseAddress: '10.244.0.1' };
    expect(flag(onNode, 'advertise-address')).toBe('--advertise-address=10.244.0.1');
    expect(flag(onNode, 'endpoint-reconciler-type')).toBe('--endpoint-reconciler-type=lease');
    // A loopback address is no valid endpoint: the reconciler stays off.
    expect(flag(base, 'advertise-address')).toBe('--advertise-address=127.0.0.1');
    expect(flag(base, 'endpoint-reconciler-type')).toBe('--endpoint-reconciler-type=none');
  });
});
