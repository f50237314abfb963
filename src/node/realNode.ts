/**
 * The real node of the embedded host: containerd (runc, Debian's CNI plugins), kubelet and
 * kube-proxy as supervised processes next to the host control plane, with the images the node
 * and the tests need imported from local archives (no registry is reachable). kwok nodes stay
 * for scale; this node runs real containers, serves logs/exec, and carries Service traffic.
 *
 * One real node per machine: the bridge, the node address and kube-proxy's iptables rules are
 * machine-wide. A lock file names the state directory that holds the node; another embedded host
 * on the same machine runs with kwok nodes only and says why.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { link, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { issueCertificate, type CertKey } from '../pki/certificates.js';
import { renderKubeconfig } from '../pki/kubeconfig.js';
import type { NodeBinaries } from '../runtime/binaries.js';
import { PORT_RANGE, type PortAllocator } from '../runtime/ports.js';
import { startAndWait, type ComponentSpec, type ControlPlaneRuntime } from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import {
  cniConfig,
  containerdConfig,
  kubeletConfig,
  kubeProxyConfig,
  nodePaths,
  nodeResolvConf,
  registryConfig,
  registryHosts,
  type NodeLayout,
} from './config.js';
import { setUpNodeNetwork, tearDownNodeNetwork, type NodeNetwork } from './network.js';

const run = promisify(execFile);

/** The embedded host's networks. Pods of the real node live in the first /24 of POD_CIDR. */
export const NodeNet = {
  bridge: 'kvc0',
  nodeIP: '10.244.0.1',
  podCIDR: '10.244.0.0/24',
  clusterCIDR: '10.244.0.0/16',
  /** kwok's simulated pod IPs: nothing answers there, so they are blackholed. */
  kwokPodCIDR: '10.250.0.0/16',
} as const;

export const REAL_NODE_NAME = 'real-node-0';
/** The runtime owner of the node's components. */
export const OWNER = `node-${REAL_NODE_NAME}`;
const LOCK = '/run/kosmos-vc/real-node.lock';

export interface RealNodeOptions {
  /** The node's directory (below the embedded host's). */
  dir: string;
  runtime: ControlPlaneRuntime;
  /** Undefined where setup could not build the node's parts: no real node then. */
  binaries: NodeBinaries | undefined;
  ports: PortAllocator;
  logger: Logger;
  /** The host cluster: its API server URL, CA (PEM) and CA key for the node's certificates. */
  host: { server: string; ca: CertKey };
  serviceCIDR: string;
  clusterDNS: string;
  clusterDomain?: string;
  readinessTimeoutMs?: number;
}

export interface RealNode {
  name: string;
  layout: NodeLayout;
  /** Stops kube-proxy and kubelet, removes every pod sandbox, stops containerd, undoes the network. */
  stop(): Promise<void>;
}

/** Why a real node cannot run on this machine, or undefined when it can. */
export async function realNodeUnavailable(b: NodeBinaries | undefined): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'a real node needs root (containers, bridge, iptables)';
  if (!b) return 'the real node components are not built (npm run setup)';
  const needed = [
    b.runc,
    join(b.cniBinDir, 'bridge'),
    join(b.cniBinDir, 'host-local'),
    join(b.cniBinDir, 'portmap'),
  ];
  const missing = needed.filter((p) => !existsSync(p));
  if (missing.length > 0)
    return `missing ${missing.join(', ')} (Debian packages runc, containernetworking-plugins)`;
  for (const [tool, version] of [
    ['iptables', '--version'],
    ['ip', '-V'],
  ] as const) {
    try {
      await run(tool, [version]);
    } catch {
      return `${tool} is not installed`;
    }
  }
  const fs = await readFile('/proc/filesystems', 'utf8').catch(() => '');
  if (!/\toverlay$/m.test(fs)) return 'the kernel has no overlay filesystem';
  if (!existsSync('/proc/sys/net/bridge/bridge-nf-call-iptables'))
    return 'the kernel has no bridge netfilter (br_netfilter)';
  if (!existsSync('/sys/fs/cgroup/memory') && !existsSync('/sys/fs/cgroup/cgroup.controllers'))
    return 'no cgroup hierarchy at /sys/fs/cgroup';
  return undefined;
}

interface LockHolder {
  dir: string;
  pid: number;
  /** The holder's start time (/proc/<pid>/stat field 22): a reused pid is not the holder. */
  start?: string;
}

function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

const readLock = (): Promise<LockHolder | 'unreadable' | undefined> =>
  readFile(LOCK, 'utf8').then(
    (t) => {
      try {
        return JSON.parse(t) as LockHolder;
      } catch {
        return 'unreadable';
      }
    },
    () => undefined,
  );

const alive = (h: LockHolder): boolean =>
  startTime(h.pid) !== undefined && (!h.start || startTime(h.pid) === h.start);

/**
 * Takes the machine's real-node lock for `dir`; returns the holder's directory when a live process
 * of another directory has it. The lock file appears whole (written aside, then hard-linked), and
 * taking over a stale one happens under a mutex (a directory), so two hosts starting at once cannot
 * both win.
 */
export async function takeLock(dir: string): Promise<string | undefined> {
  await mkdir('/run/kosmos-vc', { recursive: true });
  const me: LockHolder = { dir, pid: process.pid, start: startTime(process.pid)! };
  const aside = `${LOCK}.${process.pid}`;
  await writeFile(aside, JSON.stringify(me));
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await link(aside, LOCK);
        return undefined;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      try {
        await mkdir(`${LOCK}.takeover`); // the mutex: one process looks at the holder at a time
      } catch {
        await sleep(100);
        continue;
      }
      try {
        const held = await readLock();
        if (held === 'unreadable') return 'a holder whose lock file cannot be read';
        if (held && alive(held) && held.dir !== dir) return held.dir;
        await rm(LOCK, { force: true }); // ours from before, or its holder died: take it over
      } finally {
        await rm(`${LOCK}.takeover`, { recursive: true, force: true });
      }
    }
    return 'another host starting at the same time';
  } finally {
    await rm(aside, { force: true });
  }
}

/** The directory of another live host's real node on this machine, if one holds the lock. */
export async function realNodeHeldElsewhere(dir: string): Promise<string | undefined> {
  const held = await readLock();
  if (held === 'unreadable') return 'a holder whose lock file cannot be read';
  return held && alive(held) && held.dir !== dir ? held.dir : undefined;
}

async function releaseLock(dir: string): Promise<void> {
  const held = await readLock();
  if (held && held !== 'unreadable' && held.dir === dir) await rm(LOCK, { force: true });
}

interface NodeCredentials {
  kubelet: CertKey;
  serving: CertKey;
  proxy: CertKey;
}

/** The node's certificates, issued once from the host CA and kept in the node's directory. */
async function nodeCredentials(dir: string, ca: CertKey, name: string): Promise<NodeCredentials> {
  const file = join(dir, 'pki', 'credentials.json');
  const kept = await readFile(file, 'utf8')
    .then((t) => JSON.parse(t) as NodeCredentials & { caPem: string })
    .catch(() => undefined);
  if (kept && kept.caPem === ca.certPem) return kept;
  const creds: NodeCredentials = {
    kubelet: await issueCertificate(ca, {
      commonName: `system:node:${name}`,
      organizations: ['system:nodes'],
      usage: 'client',
    }),
    serving: await issueCertificate(ca, {
      commonName: name,
      usage: 'server',
      dnsNames: [name, 'localhost'],
      ipAddresses: [NodeNet.nodeIP, '127.0.0.1'],
    }),
    proxy: await issueCertificate(ca, { commonName: 'system:kube-proxy', usage: 'client' }),
  };
  await mkdir(join(dir, 'pki'), { recursive: true, mode: 0o700 });
  await writeFile(file, JSON.stringify({ ...creds, caPem: ca.certPem }), { mode: 0o600 });
  return creds;
}

function network(dir: string, serviceCIDR: string): NodeNetwork {
  return {
    bridge: NodeNet.bridge,
    nodeIP: NodeNet.nodeIP,
    prefix: Number(NodeNet.podCIDR.split('/')[1]),
    routedToBridge: serviceCIDR ? [serviceCIDR] : [],
    blackholed: [NodeNet.kwokPodCIDR],
    guardedPorts: PORT_RANGE,
    // Machine-wide values, kept machine-wide: whichever state directory restores them.
    sysctlStateFile: '/run/kosmos-vc/sysctl.before.json',
  };
}

/**
 * Starts (or re-attaches to) the real node and waits until it is Ready in the host. Returns
 * undefined, after saying why once, where a real node cannot run.
 */
export async function startRealNode(options: RealNodeOptions): Promise<RealNode | undefined> {
  const why = await realNodeUnavailable(options.binaries);
  const b = options.binaries;
  if (why || !b) {
    options.logger.warn(`no real node: ${why ?? 'not built'}; the host runs kwok nodes only`);
    return undefined;
  }
  const opts = { ...options, binaries: b };
  const holder = await takeLock(opts.dir);
  if (holder) {
    opts.logger.warn(`no real node: this machine's real node belongs to ${holder}; kwok nodes only`);
    return undefined;
  }
  const log = opts.logger.child({ node: REAL_NODE_NAME });
  const timeout = opts.readinessTimeoutMs ?? 90_000;
  const owner = OWNER;
  const [kubelet, kubeletHealthz, proxyHealthz, proxyMetrics, containerdMetrics, registry] =
    (await opts.ports.allocate(owner, 6)) as [number, number, number, number, number, number];
  const registryStorage = join(opts.binaries.imagesDir, 'registry');
  const pkiDir = join(opts.dir, 'pki');
  const layout: NodeLayout = {
    name: REAL_NODE_NAME,
    dir: opts.dir,
    bridge: NodeNet.bridge,
    nodeIP: NodeNet.nodeIP,
    podCIDR: NodeNet.podCIDR,
    clusterCIDR: NodeNet.clusterCIDR,
    serviceCIDR: opts.serviceCIDR,
    clusterDNS: opts.clusterDNS,
    clusterDomain: opts.clusterDomain ?? 'cluster.local',
    ports: { kubelet, kubeletHealthz, proxyHealthz, proxyMetrics, containerdMetrics, registry },
    registry: { storage: registryStorage, mirrors: await storedRegistries(registryStorage) },
    pauseImage: opts.binaries.pauseImage,
    cniBinDir: opts.binaries.cniBinDir,
    runc: opts.binaries.runc,
    shimDir: opts.binaries.shimDir,
    pki: {
      ca: join(pkiDir, 'ca.crt'),
      servingCert: join(pkiDir, 'kubelet-serving.crt'),
      servingKey: join(pkiDir, 'kubelet-serving.key'),
    },
    kubeletKubeconfig: join(opts.dir, 'kubelet.conf'),
    proxyKubeconfig: join(opts.dir, 'kube-proxy.conf'),
  };
  const p = nodePaths(layout);
  const net = network(opts.dir, opts.serviceCIDR);
  const node: RealNode = {
    name: REAL_NODE_NAME,
    layout,
    stop: () => stopRealNode(opts.runtime, opts.binaries, opts.dir, opts.logger),
  };
  try {
    const creds = await nodeCredentials(opts.dir, opts.host.ca, REAL_NODE_NAME);
    for (const d of [
      p.containerdRoot,
      p.containerdState,
      p.cniConfDir,
      p.cniDataDir,
      p.kubeletRoot,
      p.podLogs,
      ...Object.keys(registryHosts(layout)).map((registry) => join(p.containerdHosts, registry)),
    ])
      await mkdir(d, { recursive: true, mode: 0o700 });
    const files: [string, string, number][] = [
      [layout.pki.ca, opts.host.ca.certPem, 0o644],
      [layout.pki.servingCert, creds.serving.certPem, 0o644],
      [layout.pki.servingKey, creds.serving.keyPem, 0o600],
      [p.containerdConfig, containerdConfig(layout), 0o644],
      [p.registryConfig, registryConfig(layout), 0o644],
      ...Object.entries(registryHosts(layout)).map(([registry, toml]): [string, string, number] => [
        join(p.containerdHosts, registry, 'hosts.toml'),
        toml,
        0o644,
      ]),
      [join(p.cniConfDir, '10-kosmos-vc.conflist'), cniConfig(layout), 0o644],
      [p.kubeletConfig, kubeletConfig(layout), 0o644],
      [p.resolvConf, nodeResolvConf(), 0o644],
      [p.proxyConfig, kubeProxyConfig(layout), 0o644],
      [
        layout.kubeletKubeconfig,
        kubeconfig(opts.host, `system:node:${REAL_NODE_NAME}`, creds.kubelet),
        0o600,
      ],
      [layout.proxyKubeconfig, kubeconfig(opts.host, 'system:kube-proxy', creds.proxy), 0o600],
    ];
    for (const [path, text, mode] of files) await writeFile(path, text, { mode });
    await setUpNodeNetwork(net);

    const path = `${opts.binaries.shimDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
    await startAndWait(
      opts.runtime,
      {
        owner,
        name: 'registry',
        command: opts.binaries.registry,
        args: ['serve', p.registryConfig],
        probe: { url: `http://127.0.0.1:${registry}/v2/` },
      },
      timeout,
      log,
    );
    await startAndWait(
      opts.runtime,
      {
        owner,
        name: 'containerd',
        command: opts.binaries.containerd,
        args: [`--config=${p.containerdConfig}`, '--log-level=warn'],
        env: { PATH: path },
        probe: { url: `http://127.0.0.1:${containerdMetrics}/v1/metrics` },
      },
      timeout,
      log,
    );
    await startAndWait(
      opts.runtime,
      {
        owner,
        name: 'kubelet',
        command: opts.binaries.kubelet,
        args: [
          `--config=${p.kubeletConfig}`,
          `--kubeconfig=${layout.kubeletKubeconfig}`,
          `--root-dir=${p.kubeletRoot}`,
          `--hostname-override=${REAL_NODE_NAME}`,
          `--node-ip=${NodeNet.nodeIP}`,
          '--v=1',
        ],
        env: { PATH: path },
        probe: { url: `http://127.0.0.1:${kubeletHealthz}/healthz` },
      },
      timeout,
      log,
    );
    await startAndWait(
      opts.runtime,
      {
        owner,
        name: 'kube-proxy',
        command: opts.binaries.kubeProxy,
        args: [`--config=${p.proxyConfig}`, '--v=1'],
        probe: { url: `http://127.0.0.1:${proxyHealthz}/healthz` },
      },
      timeout,
      log,
    );
    await waitNodeReady(layout.kubeletKubeconfig, REAL_NODE_NAME, timeout);
    log.info('real node ready', { nodeIP: NodeNet.nodeIP });
    return node;
  } catch (e) {
    log.error('real node failed to start; stopping it', { error: (e as Error).message });
    await node.stop().catch(() => undefined);
    throw e;
  }
}

function kubeconfig(host: RealNodeOptions['host'], user: string, creds: CertKey): string {
  return renderKubeconfig({
    clusterName: 'kosmos-vc-host',
    server: host.server,
    caPem: host.ca.certPem,
    userName: user,
    certPem: creds.certPem,
    keyPem: creds.keyPem,
  });
}

/**
 * The registries setup pushed images for: the first path element of every repository in the
 * registry's storage (`registry.k8s.io/e2e-test-images/agnhost` -> `registry.k8s.io`).
 */
async function storedRegistries(storage: string): Promise<string[]> {
  const repositories = join(storage, 'docker', 'registry', 'v2', 'repositories');
  // Never throws (it runs before the node's clean-up is armed): no storage means no mirrors, and
  // every pull then fails on loopback.
  const entries = await readdir(repositories, { withFileTypes: true }).catch(() => []);
  return entries.filter((d) => d.isDirectory()).map((d) => d.name);
}

async function waitNodeReady(kubeconfigPath: string, name: string, timeoutMs: number): Promise<void> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  const deadline = Date.now() + timeoutMs;
  let last = 'not registered';
  while (Date.now() < deadline) {
    try {
      const node = await core.readNode({ name });
      const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
      if (ready?.status === 'True') return;
      last = ready ? `${ready.reason ?? ''}: ${ready.message ?? ''}` : 'no Ready condition';
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(500);
  }
  throw new Error(`node ${name} not Ready after ${Math.round(timeoutMs / 1000)}s (${last})`);
}

/** Mount points below `dir`, deepest first (kubelet's volume mounts outlive a stopped kubelet). */
async function mountsBelow(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/**
 * Stops the node in the order that leaves nothing behind: kube-proxy (and its rules), kubelet,
 * every pod sandbox through containerd (so CNI releases each pod's network and address), then
 * containerd, leftover volume mounts, the bridge and routes, the lock. The host keeps the Pod
 * objects: the next start runs them again. Also cleans up after a run that died (`reap`): then
 * containerd is started from its record first, so the sandboxes can be removed properly.
 */
export async function stopRealNode(
  runtime: ControlPlaneRuntime,
  b: NodeBinaries,
  dir: string,
  logger: Logger,
  reap?: { containerd: ComponentSpec },
): Promise<void> {
  const p = nodePaths({ dir } as NodeLayout);
  await runtime.stop(OWNER, 'kube-proxy');
  await runtime.stop(OWNER, 'kubelet');
  if (reap) {
    await runtime.ensure(reap.containerd);
    await runtime.waitReady(OWNER, 'containerd', 30_000).catch(() => undefined);
  }
  if (existsSync(p.containerdSocket))
    await run(b.crictl, [
      `--runtime-endpoint=unix://${p.containerdSocket}`,
      '--timeout=30s',
      'rmp',
      '--all',
      '--force',
    ]).catch((e: unknown) => logger.warn('removing pod sandboxes failed', { error: (e as Error).message }));
  await runtime.stop(OWNER, 'containerd');
  await runtime.stop(OWNER, 'registry');
  for (const m of await mountsBelow(dir)) await run('umount', ['-l', m]).catch(() => undefined);
  // The bridge, routes and rules are the machine's: leave them to a live node of another directory
  // (reaping a dead test run while `kosmos-vc up` holds the node must not cut its network).
  if ((await takeLock(dir)) === undefined) {
    if (existsSync(p.proxyConfig))
      await run(b.kubeProxy, ['--cleanup', `--config=${p.proxyConfig}`]).catch(() => undefined);
    await tearDownNodeNetwork(network(dir, ''));
    await releaseLock(dir);
  }
}
