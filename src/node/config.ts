/**
 * The configuration files of the real node (containerd, CNI, kubelet, kube-proxy), rendered from
 * one NodeLayout. Pure functions: realNode.ts writes them, unit tests read them. Every path a
 * component would otherwise take from the machine (/var/lib/kubelet, /var/log/pods,
 * /etc/cni/net.d, /run/containerd, ...) points below the layout's directory, so two state
 * directories never share a file and removing the directory removes the node.
 */
import { join } from 'node:path';
import { stringify } from 'yaml';

export interface NodeLayout {
  /** Kubernetes node name. */
  name: string;
  /** Everything of the node lives below this directory. */
  dir: string;
  /** The Linux bridge pods attach to; it carries the node address. */
  bridge: string;
  /** The node's address: the bridge's, the pods' gateway, where NodePorts answer. */
  nodeIP: string;
  /** This node's pod range (a /24 of the cluster's pod range), on the bridge. */
  podCIDR: string;
  /** The cluster's pod range (kube-proxy's clusterCIDR). */
  clusterCIDR: string;
  serviceCIDR: string;
  clusterDNS: string;
  clusterDomain: string;
  ports: {
    kubelet: number;
    kubeletHealthz: number;
    proxyHealthz: number;
    proxyMetrics: number;
    containerdMetrics: number;
    /** The loopback registry every image is pulled from. */
    registry: number;
  };
  /** The registry's storage (setup pushed the images there) and the registries it stands in for. */
  registry: { storage: string; mirrors: readonly string[] };
  /** Upstream name of the pause image (sandbox). */
  pauseImage: string;
  /** Debian's CNI plugins (bridge, host-local, portmap, loopback). */
  cniBinDir: string;
  runc: string;
  /** The folder holding containerd-shim-runc-v2 (containerd finds shims on PATH). */
  shimDir: string;
  /** The cluster CA (kubelet's client CA) and the node's own certificates. */
  pki: { ca: string; servingCert: string; servingKey: string };
  kubeletKubeconfig: string;
  proxyKubeconfig: string;
}

/** Root may not raise RLIMIT_NOFILE above this on the machines we run on. */
export const MAX_OPEN_FILES = 20_000;

export const nodePaths = (l: NodeLayout) => ({
  containerdRoot: join(l.dir, 'containerd', 'root'),
  containerdState: join(l.dir, 'containerd', 'state'),
  containerdConfig: join(l.dir, 'containerd', 'config.toml'),
  containerdSocket: join(l.dir, 'containerd', 'containerd.sock'),
  containerdHosts: join(l.dir, 'containerd', 'certs.d'),
  registryConfig: join(l.dir, 'registry.yaml'),
  runcRoot: join(l.dir, 'containerd', 'runc'),
  cniConfDir: join(l.dir, 'cni', 'net.d'),
  cniDataDir: join(l.dir, 'cni', 'networks'),
  kubeletRoot: join(l.dir, 'kubelet'),
  kubeletConfig: join(l.dir, 'kubelet.yaml'),
  podLogs: join(l.dir, 'pod-logs'),
  resolvConf: join(l.dir, 'resolv.conf'),
  proxyConfig: join(l.dir, 'kube-proxy.yaml'),
});

/** TOML strings: JSON's escaping is a subset TOML basic strings accept. */
const q = (s: string): string => JSON.stringify(s);

/** containerd 2.x (config version 3): CRI with runc via cgroupfs, CNI from our directory. */
export function containerdConfig(l: NodeLayout): string {
  const p = nodePaths(l);
  return `version = 3
root = ${q(p.containerdRoot)}
state = ${q(p.containerdState)}
# NRI and the event/tracing sockets would be shared machine paths; the node needs none of them.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = ${q(p.containerdSocket)}

[ttrpc]
  address = ${q(`${p.containerdSocket}.ttrpc`)}

[metrics]
  address = ${q(`127.0.0.1:${l.ports.containerdMetrics}`)}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = ${q(l.pauseImage)}
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = ${q(p.containerdHosts)}

[plugins."io.containerd.cri.v1.runtime"]
  # Root here may not lower OOM scores (no CAP_SYS_RESOURCE): keep containers at or above ours.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [${q(l.cniBinDir)}]
    conf_dir = ${q(p.cniConfDir)}
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = ${q(l.runc)}
        Root = ${q(p.runcRoot)}
        SystemdCgroup = false
`;
}

/**
 * One bridge for the node's pods, the node address as their gateway, no masquerade: pod traffic
 * has nowhere to go but this machine (realNode.ts drops forwarding off the bridge).
 */
export function cniConfig(l: NodeLayout): string {
  const p = nodePaths(l);
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: 'kosmos-vc',
      plugins: [
        {
          type: 'bridge',
          bridge: l.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: l.podCIDR, gateway: l.nodeIP }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: p.cniDataDir,
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

/** kubelet on cgroup v1 without systemd, serving its API on the node address with our certificates. */
export function kubeletConfig(l: NodeLayout): string {
  const p = nodePaths(l);
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: l.nodeIP,
    port: l.ports.kubelet,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: l.ports.kubeletHealthz,
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: l.pki.ca },
    },
    authorization: { mode: 'Webhook' },
    tlsCertFile: l.pki.servingCert,
    tlsPrivateKeyFile: l.pki.servingKey,
    cgroupDriver: 'cgroupfs',
    failCgroupV1: false,
    containerRuntimeEndpoint: `unix://${p.containerdSocket}`,
    clusterDNS: [l.clusterDNS],
    clusterDomain: l.clusterDomain,
    resolvConf: p.resolvConf,
    podLogsDir: p.podLogs,
    volumePluginDir: join(p.kubeletRoot, 'volume-plugins'),
    maxOpenFiles: MAX_OPEN_FILES,
    // Root here may not lower OOM scores; 0 leaves the kubelet where it is.
    oomScoreAdj: 0,
    maxPods: 110,
    podCIDR: l.podCIDR,
    failSwapOn: false,
    serializeImagePulls: false,
    // Images cannot be pulled again here: never collect them, never evict for disk usage.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
    registerNode: true,
    rotateCertificates: false,
    shutdownGracePeriod: '0s',
    logging: { format: 'text' },
  });
}

/** kube-proxy in iptables mode; NodePorts answer on the node address only. */
export function kubeProxyConfig(l: NodeLayout): string {
  return stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig: l.proxyKubeconfig },
    hostnameOverride: l.name,
    mode: 'iptables',
    clusterCIDR: l.clusterCIDR,
    healthzBindAddress: `127.0.0.1:${l.ports.proxyHealthz}`,
    metricsBindAddress: `127.0.0.1:${l.ports.proxyMetrics}`,
    nodePortAddresses: [`${l.nodeIP}/32`],
    // 0: leave the machine's conntrack sysctls as they are.
    conntrack: { maxPerCore: 0, min: 0 },
    oomScoreAdj: 0,
    iptables: { localhostNodePorts: false },
  });
}

/**
 * The resolv.conf of pods with dnsPolicy Default: no nameserver. Nothing upstream is reachable,
 * and naming the host's DNS here would let tenant pods with that policy resolve host names.
 */
export function nodeResolvConf(): string {
  return '# kosmos-vc real node: no upstream resolver is reachable from pods\n';
}

/**
 * The loopback registry: read-only, the storage setup pushed every image into, each under its
 * upstream registry's name as the first path element (`registry.k8s.io/pause`, ...).
 */
export function registryConfig(l: NodeLayout): string {
  return stringify({
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: l.registry.storage },
      maintenance: { readonly: { enabled: true }, uploadpurging: { enabled: false } },
    },
    http: { addr: `127.0.0.1:${l.ports.registry}` },
  });
}

/**
 * containerd's registry hosts (`certs.d/<registry>/hosts.toml`): each registry setup built images
 * for resolves to its folder in the loopback registry; every other registry (`_default`) to the
 * loopback registry's root, where nothing is stored. A pull is answered on this machine or fails
 * with "not found": no image request leaves it.
 */
export function registryHosts(l: NodeLayout): Record<string, string> {
  const local = `http://127.0.0.1:${l.ports.registry}`;
  const files: Record<string, string> = { _default: `server = ${q(local)}\n` };
  for (const registry of l.registry.mirrors)
    files[registry] = `server = ${q(local)}

[host.${q(`${local}/v2/${registry}`)}]
  capabilities = ["pull", "resolve"]
  override_path = true
`;
  return files;
}
