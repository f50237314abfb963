/**
 * Where the real components live. scripts/setup.sh pins their versions and builds them into a
 * cache outside the repo; `setup.sh --print` names each component's bin directory.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export interface Binaries {
  temporal: string;
  etcd: string;
  /** Backups: etcdctl takes an etcd snapshot, etcdutl checks one and restores it. */
  etcdctl: string;
  etcdutl: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  /**
   * kube-control-plane (kube-control-plane/main.go): the API server, controller-manager and
   * scheduler of the same release in one process (ADR 12, decision 16).
   */
  kubeControlPlane?: string;
  kubectl: string;
  kwok: string;
  /** kwok's stage definitions (node-initialize, pod-ready, ...). */
  kwokStagesDir: string;
  /** clusterTree's compiled entry point, run with this Node.js (`npm run build` makes it). */
  clusterTree: string;
  coredns: string;
  /** What a real node runs; undefined where setup could not build or install it (kwok only). */
  node?: NodeBinaries;
  /** Helm, for the chart (deploy/helm/kosmos-vc); absent before setup built it. */
  helm?: string;
}

export interface NodeBinaries {
  containerd: string;
  /** Holds containerd-shim-runc-v2: containerd finds its shim on PATH. */
  shimDir: string;
  ctr: string;
  crictl: string;
  kubelet: string;
  kubeProxy: string;
  /** Debian's runc and CNI plugins. */
  runc: string;
  cniBinDir: string;
  /** What setup built for images: `<key>.name` files and `registry/`, the registry's storage. */
  imagesDir: string;
  /** The OCI registry (distribution) that serves those images to the node on loopback. */
  registry: string;
  /** The upstream name of the pause image among them. */
  pauseImage: string;
  /** The upstream name of the busybox image among them (sh, sed: the /etc/hosts rewrite). */
  toolsImage: string;
  /** rancher's local-path-provisioner: the embedded host's StorageClass; absent before setup built it. */
  localPathProvisioner?: string;
}

export class ComponentsMissingError extends Error {
  override readonly name = 'ComponentsMissingError';
  constructor(readonly missing: string[]) {
    super(
      `components not built: ${missing.join(', ')}; run \`npm run setup\` (clusterTree: \`npm run build\`) first`,
    );
  }
}

/** The repository root: the nearest parent directory holding scripts/setup.sh. */
export function repoRoot(from = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  while (!existsSync(join(dir, 'scripts', 'setup.sh'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`scripts/setup.sh not found above ${from}`);
    dir = up;
  }
  return dir;
}

/** Each component's bin directory, as `setup.sh --print` names it. */
async function componentDirs(): Promise<Map<string, string>> {
  const { stdout } = await promisify(execFile)('bash', [join(repoRoot(), 'scripts', 'setup.sh'), '--print']);
  return new Map(
    stdout
      .trim()
      .split('\n')
      .map((l) => l.split('=', 2) as [string, string]),
  );
}

/** The upstream conformance suite (e2e.test) and the ginkgo CLI that runs it in parallel. */
export interface ConformanceBinaries {
  e2eTest: string;
  ginkgo: string;
}

export async function resolveConformanceBinaries(): Promise<ConformanceBinaries> {
  const dir = (await componentDirs()).get('conformance') ?? '/nonexistent';
  const b = { e2eTest: join(dir, 'e2e.test'), ginkgo: join(dir, 'ginkgo') };
  const missing = Object.entries(b)
    .filter(([, path]) => !existsSync(path))
    .map(([name]) => name);
  if (missing.length > 0) throw new ComponentsMissingError(missing);
  return b;
}

export async function resolveBinaries(): Promise<Binaries> {
  const dirs = await componentDirs();
  const bin = (component: string, file: string): string => join(dirs.get(component) ?? '/nonexistent', file);
  const b: Binaries = {
    temporal: bin('temporal', 'temporal'),
    etcd: bin('etcd', 'etcd'),
    etcdctl: bin('etcd', 'etcdctl'),
    etcdutl: bin('etcd', 'etcdutl'),
    kubeApiserver: bin('kubernetes', 'kube-apiserver'),
    kubeControllerManager: bin('kubernetes', 'kube-controller-manager'),
    kubeScheduler: bin('kubernetes', 'kube-scheduler'),
    kubectl: bin('kubernetes', 'kubectl'),
    kwok: bin('kwok', 'kwok'),
    kwokStagesDir: join(dirname(dirs.get('kwok') ?? '/nonexistent'), 'stages'),
    clusterTree: join(repoRoot(), 'dist', 'src', 'clustertree', 'main.js'),
    coredns: bin('coredns', 'coredns'),
  };
  const missing = (Object.entries(b) as [string, string][])
    .filter(([, path]) => !existsSync(path))
    .map(([name]) => name);
  if (missing.length > 0) throw new ComponentsMissingError(missing);
  const node = nodeBinaries(dirs);
  const helm = bin('helm', 'helm');
  // One process needs it (the default, KOSMOS_VC_ONE_PROCESS): a worker without it refuses to start
  // and says to run setup, or to set KOSMOS_VC_ONE_PROCESS=false; other programs run without it.
  const kubeControlPlane = bin('controlplane', 'kube-control-plane');
  return {
    ...b,
    ...(node ? { node } : {}),
    ...(existsSync(helm) ? { helm } : {}),
    ...(existsSync(kubeControlPlane) ? { kubeControlPlane } : {}),
  };
}

function nodeBinaries(dirs: Map<string, string>): NodeBinaries | undefined {
  const containerd = dirs.get('containerd') ?? '/nonexistent';
  // --print names <dir>/bin for every component; the images sit in <dir> itself.
  const imagesDir = dirname(dirs.get('images') ?? '/nonexistent/bin');
  const n: NodeBinaries = {
    containerd: join(containerd, 'containerd'),
    shimDir: containerd,
    ctr: join(containerd, 'ctr'),
    crictl: join(containerd, 'crictl'),
    kubelet: join(dirs.get('kubernetes') ?? '/nonexistent', 'kubelet'),
    kubeProxy: join(dirs.get('kubernetes') ?? '/nonexistent', 'kube-proxy'),
    runc: '/usr/sbin/runc',
    cniBinDir: '/usr/lib/cni',
    imagesDir,
    registry: join(dirs.get('registry') ?? '/nonexistent', 'registry'),
    pauseImage: '',
    toolsImage: '',
  };
  const pause = join(imagesDir, 'pause.name');
  const busybox = join(imagesDir, 'busybox.name');
  // `.complete` is written once every image is built: a half-built set is no set.
  const files = [
    join(imagesDir, '.complete'),
    n.containerd,
    join(containerd, 'containerd-shim-runc-v2'),
    n.ctr,
    n.crictl,
    n.kubelet,
    n.kubeProxy,
    n.registry,
    join(imagesDir, 'registry', 'docker', 'registry', 'v2', 'repositories'),
    pause,
    busybox,
  ];
  if (!files.every((f) => existsSync(f))) return undefined;
  const name = (f: string) => readFileSync(f, 'utf8').trim();
  const provisioner = join(dirs.get('storage') ?? '/nonexistent', 'local-path-provisioner');
  return {
    ...n,
    pauseImage: name(pause),
    toolsImage: name(busybox),
    ...(existsSync(provisioner) ? { localPathProvisioner: provisioner } : {}),
  };
}
