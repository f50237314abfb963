/**
 * The certificate set of one Kubernetes control plane (a tenant's, or the embedded host's),
 * written under one directory. Re-running with the same request changes nothing; a changed
 * request (new SANs) re-issues the leaves and keeps the CAs and the service-account key, so
 * issued kubeconfigs stay trusted. Renewal issues every leaf again; a CA rotation adds a new
 * cluster CA next to the old one until the old one is retired (docs/adr/0010).
 *
 * `dir` is a symbolic link to a generation directory beside it: a new set is written in full
 * into a new generation and the link swapped with one rename, so the directory is never
 * half-written (and missing only for a moment on the first swap of a set from before
 * generations, which a later call repairs) (a reader that opens a certificate just before the swap and its key
 * just after gets a mismatched pair once, and reads again: the API server's reloader and etcd's
 * per-handshake loader both do).
 */
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import {
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  realpath,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { formatIPv4, parseIPv4Cidr } from '../api/virtualCluster.js';
import {
  createCA,
  createServiceAccountKeyPair,
  firstCertificate,
  issueCertificate,
  type CertKey,
  type LeafRequest,
} from './certificates.js';

export interface ControlPlanePkiRequest {
  clusterName: string;
  serviceCIDR: string;
  advertiseAddress: string;
  dnsDomain?: string;
  extraSANs?: readonly string[];
  /** More names of etcd's serving certificate (its Service's, when it runs as a pod: ADR 14). */
  etcdSANs?: readonly string[];
  /** More names of clusterTree's kubelet endpoint (its Service's, when it runs as a pod: ADR 14). */
  clusterTreeSANs?: readonly string[];
  /** Lifetime of every leaf in milliseconds (default one year); CAs last ten years. */
  leafValidityMs?: number;
}

/** File names inside a PKI directory; keys are written with mode 0600. */
export const PkiFile = {
  /** The cluster CA: its .crt is the trust bundle (the signing CA first, then a previous one during a rotation). */
  ca: 'ca',
  /** The cluster CA being retired: present only while a CA rotation overlaps, signing serving leaves. */
  previousCA: 'ca-previous',
  /** The signing cluster CA alone (the controller-manager's CSR signer takes exactly one certificate). */
  clusterSigner: 'ca-signer',
  frontProxyCA: 'front-proxy-ca',
  frontProxyClient: 'front-proxy-client',
  etcdCA: 'etcd/ca',
  etcdServer: 'etcd/server',
  apiserverEtcdClient: 'apiserver-etcd-client',
  apiserver: 'apiserver',
  admin: 'admin',
  controllerManager: 'controller-manager',
  controllerManagerServing: 'controller-manager-serving',
  scheduler: 'scheduler',
  schedulerServing: 'scheduler-serving',
  /** The apiserver's client certificate towards kubelets (logs, exec, port-forward). */
  apiserverKubeletClient: 'apiserver-kubelet-client',
  /** clusterTree: its client identity in the tenant, and the serving certificate of its kubelet endpoint. */
  clusterTree: 'clustertree',
  clusterTreeKubelet: 'clustertree-kubelet',
  /** The tenant's CoreDNS, a client of its API server. */
  coredns: 'coredns',
  /** The operator's own admin identity in the tenant (not the published one: not counted as use). */
  operator: 'operator',
} as const;
export type PkiName = (typeof PkiFile)[keyof typeof PkiFile];

export const ServiceAccountKey = { public: 'sa.pub', private: 'sa.key' } as const;

export function certPath(dir: string, name: PkiName): string {
  return join(dir, `${name}.crt`);
}
export function keyPath(dir: string, name: PkiName): string {
  return join(dir, `${name}.key`);
}

const IP = /^[0-9.]+$/;

/** The apiserver's subject alternative names for `req`. */
export function apiserverSANs(req: ControlPlanePkiRequest): { dnsNames: string[]; ipAddresses: string[] } {
  const cidr = parseIPv4Cidr(req.serviceCIDR);
  if (!cidr) throw new Error(`invalid service CIDR ${req.serviceCIDR}`);
  const domain = req.dnsDomain ?? 'cluster.local';
  const names = [
    'localhost',
    'kubernetes',
    'kubernetes.default',
    'kubernetes.default.svc',
    `kubernetes.default.svc.${domain}`,
  ];
  const ips = ['127.0.0.1', formatIPv4(cidr.base + 1), req.advertiseAddress];
  for (const san of req.extraSANs ?? []) (IP.test(san) ? ips : names).push(san);
  return { dnsNames: [...new Set(names)], ipAddresses: [...new Set(ips)] };
}

async function readPair(dir: string, name: PkiName): Promise<CertKey | undefined> {
  try {
    return {
      certPem: await readFile(certPath(dir, name), 'utf8'),
      keyPem: await readFile(keyPath(dir, name), 'utf8'),
    };
  } catch {
    return undefined;
  }
}

/** Reads a certificate and key written by writeControlPlanePki. */
export async function loadPair(dir: string, name: PkiName): Promise<CertKey> {
  const pair = await readPair(dir, name);
  if (!pair) throw new Error(`missing certificate ${name} in ${dir}`);
  return pair;
}

export interface CertificateExpiry {
  /** The earliest notAfter of any leaf (ISO 8601). */
  notAfter: string;
  /** The signing cluster CA's notAfter. */
  caNotAfter: string;
  caFingerprint: string;
  /** The retiring CA's fingerprint while a CA rotation overlaps. */
  previousCAFingerprint?: string;
  /** When the overlap ends (written when the rotation started). */
  previousCARetiresAt?: string;
  /** How many CA rotations this set has started. */
  caGeneration: number;
}

export interface PkiResult extends CertificateExpiry {
  /** sha256 of the request; stored so a re-run with the same request does nothing. */
  requestHash: string;
  reissued: boolean;
}

export interface PkiOptions {
  /** Issue every leaf again even when the request is unchanged; the CAs and the service-account key stay. */
  renew?: boolean;
  /**
   * `start`: a new cluster CA signs the client leaves while the current one, now the previous,
   * keeps signing the serving leaves; both are trusted, so old and new kubeconfigs work.
   * Idempotent per generation. `retire`: the previous CA is dropped and every leaf comes from
   * the new one.
   */
  caRotation?: { action: 'start'; generation: number; retiresAt: string } | { action: 'retire' };
  /**
   * Called with a new set before it replaces the one in `dir`: where the set is kept for good
   * (a Secret, ADR 14). A failure leaves `dir` as it was.
   */
  commit?: (files: PkiSet) => Promise<void>;
}

/** A whole set: file paths relative to its directory (`etcd/ca.crt`), and their contents. */
export type PkiSet = ReadonlyMap<string, string>;

/** Renewal or a CA rotation found no set to work on: never made up from nothing. */
export class PkiMissingError extends Error {
  override readonly name = 'PkiMissingError';
  constructor(readonly dir: string) {
    super(`no certificate set in ${dir} to renew or rotate`);
  }
}

export class CARotationInProgressError extends Error {
  override readonly name = 'CARotationInProgressError';
  constructor(readonly dir: string) {
    super('a CA rotation is already in progress: the previous CA must be retired first');
  }
}

const MARKER = '.complete';
const CA_GENERATION = 'ca-generation';
const CA_RETIRES_AT = 'ca-previous-retires-at';
/**
 * Raised whenever the set of files changes (2: apiserver-kubelet-client; 3: clusterTree's and
 * CoreDNS's; 4: the operator's).
 */
const PKI_SET_VERSION = 4;

/** The leaves and what signs them: `serving` ones come from the previous CA during a rotation. */
const CLUSTER_LEAVES: readonly [PkiName, 'client' | 'serving'][] = [
  [PkiFile.apiserver, 'serving'],
  [PkiFile.admin, 'client'],
  [PkiFile.apiserverKubeletClient, 'client'],
  [PkiFile.controllerManager, 'client'],
  [PkiFile.scheduler, 'client'],
  [PkiFile.controllerManagerServing, 'serving'],
  [PkiFile.schedulerServing, 'serving'],
  [PkiFile.clusterTree, 'client'],
  [PkiFile.clusterTreeKubelet, 'serving'],
  [PkiFile.coredns, 'client'],
  [PkiFile.operator, 'client'],
];
const LEAVES: readonly PkiName[] = [
  PkiFile.etcdServer,
  PkiFile.apiserverEtcdClient,
  PkiFile.frontProxyClient,
  ...CLUSTER_LEAVES.map(([n]) => n),
];

/** The user clusterTree and CoreDNS authenticate as in the tenant (their RBAC names them). */
export const CLUSTERTREE_USER = 'kosmos-vc:clustertree';
export const DNS_USER = 'kosmos-vc:coredns';
/** The operator's own calls to a tenant: admin, but told apart from a user's (idle detection). */
export const OPERATOR_USER = 'kosmos-vc:operator';

/** The leaves a set from an older version may lack (clusterTree's and CoreDNS's were issued elsewhere, the operator's did not exist). */
function lazyLeaves(clusterTreeSANs?: readonly string[]): Partial<Record<PkiName, LeafRequest>> {
  return {
    [PkiFile.clusterTree]: { commonName: CLUSTERTREE_USER, usage: 'client' },
    // clusterTree serves its kubelet endpoint on loopback, next to the apiserver that calls it;
    // as a pod, behind its Service, by the Service's name.
    [PkiFile.clusterTreeKubelet]: {
      commonName: 'kosmos-vc-clustertree-kubelet',
      usage: 'server',
      ipAddresses: ['127.0.0.1'],
      ...(clusterTreeSANs?.length ? { dnsNames: [...clusterTreeSANs] } : {}),
    },
    [PkiFile.coredns]: { commonName: DNS_USER, usage: 'client' },
    [PkiFile.operator]: { commonName: OPERATOR_USER, organizations: ['system:masters'], usage: 'client' },
  };
}

const notAfterOf = (pem: string): number => Date.parse(new X509Certificate(pem).validTo);

/** When the set's certificates expire, read from the files. */
export async function certificateExpiry(dir: string): Promise<CertificateExpiry> {
  const ca = await loadPair(dir, PkiFile.ca);
  const previous = await readPair(dir, PkiFile.previousCA);
  const retiresAt = await readFile(join(dir, CA_RETIRES_AT), 'utf8').catch(() => undefined);
  let earliest = Infinity;
  for (const name of LEAVES) {
    const pem = await readFile(certPath(dir, name), 'utf8').catch(() => undefined);
    if (pem) earliest = Math.min(earliest, notAfterOf(pem));
  }
  const signing = firstCertificate(ca.certPem);
  return {
    notAfter: new Date(earliest === Infinity ? notAfterOf(signing) : earliest).toISOString(),
    caNotAfter: new Date(notAfterOf(signing)).toISOString(),
    caFingerprint: fingerprint(signing),
    ...(previous ? { previousCAFingerprint: fingerprint(previous.certPem) } : {}),
    ...(previous && retiresAt ? { previousCARetiresAt: retiresAt.trim() } : {}),
    caGeneration: Number(await readFile(join(dir, CA_GENERATION), 'utf8').catch(() => '0')) || 0,
  };
}

export async function writeControlPlanePki(
  dir: string,
  req: ControlPlanePkiRequest,
  opts: PkiOptions = {},
): Promise<PkiResult> {
  // The set's version is part of the hash: a set from an older version gets its new leaves.
  const requestHash = createHash('sha256')
    .update(JSON.stringify({ ...req, set: PKI_SET_VERSION }))
    .digest('hex');
  await recoverSet(dir);
  const existing = await readFile(join(dir, MARKER), 'utf8').catch(() => undefined);
  const current = existing ? await certificateExpiry(dir) : undefined;
  const rotation = opts.caRotation;
  const rotationDone =
    !rotation ||
    (rotation.action === 'start'
      ? (current?.caGeneration ?? 0) >= rotation.generation
      : current?.previousCAFingerprint === undefined);
  if (current && existing === requestHash && !opts.renew && rotationDone) {
    // A retry after a swap whose clean-up did not happen: the delete is what reloads watchers.
    await removeStaleGenerations(dir);
    return { ...current, requestHash, reissued: false };
  }

  const files = new Map<string, string>();
  const put = (name: PkiName, pair: CertKey): void => {
    files.set(`${name}.crt`, pair.certPem);
    files.set(`${name}.key`, pair.keyPem);
  };

  let ca = await readPair(dir, PkiFile.ca);
  let previous = await readPair(dir, PkiFile.previousCA);
  let generation = current?.caGeneration ?? 0;
  let retiresAt = current?.previousCARetiresAt;
  if (!ca && (opts.renew || rotation)) throw new PkiMissingError(dir);
  if (!ca) ca = await createCA(`${req.clusterName}-ca`);
  else if (rotation?.action === 'start' && generation < rotation.generation) {
    if (previous) throw new CARotationInProgressError(dir);
    previous = { certPem: firstCertificate(ca.certPem), keyPem: ca.keyPem };
    ca = await createCA(`${req.clusterName}-ca-${rotation.generation}`);
    generation = rotation.generation;
    retiresAt = rotation.retiresAt;
  } else if (rotation?.action === 'retire') previous = undefined;
  const signing: CertKey = { certPem: firstCertificate(ca.certPem), keyPem: ca.keyPem };
  // The trust bundle: what every component and kubeconfig trusts for this cluster.
  put(PkiFile.ca, { certPem: signing.certPem + (previous?.certPem ?? ''), keyPem: signing.keyPem });
  put(PkiFile.clusterSigner, signing);
  if (previous) put(PkiFile.previousCA, previous);
  if (previous && retiresAt) files.set(CA_RETIRES_AT, retiresAt);
  files.set(CA_GENERATION, String(generation));

  // Keys and signatures are made at once: WebCrypto does each on libuv's threads, and one after
  // the other the set took ~0.1 s of waiting on them.
  const [frontProxyCA, etcdCA] = await Promise.all([
    readPair(dir, PkiFile.frontProxyCA).then((p) => p ?? createCA(`${req.clusterName}-front-proxy-ca`)),
    readPair(dir, PkiFile.etcdCA).then((p) => p ?? createCA(`${req.clusterName}-etcd-ca`)),
  ]);
  put(PkiFile.frontProxyCA, frontProxyCA);
  put(PkiFile.etcdCA, etcdCA);

  const validityMs = req.leafValidityMs;
  const loopback = { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', req.advertiseAddress] };
  const requests: Partial<Record<PkiName, LeafRequest>> = {
    [PkiFile.apiserver]: { commonName: 'kube-apiserver', usage: 'server', ...apiserverSANs(req) },
    [PkiFile.admin]: { commonName: 'kubernetes-admin', organizations: ['system:masters'], usage: 'client' },
    [PkiFile.apiserverKubeletClient]: {
      commonName: 'kube-apiserver-kubelet-client',
      organizations: ['system:masters'],
      usage: 'client',
    },
    [PkiFile.controllerManager]: { commonName: 'system:kube-controller-manager', usage: 'client' },
    [PkiFile.scheduler]: { commonName: 'system:kube-scheduler', usage: 'client' },
    [PkiFile.controllerManagerServing]: {
      commonName: 'kube-controller-manager',
      usage: 'server',
      ...loopback,
    },
    [PkiFile.schedulerServing]: { commonName: 'kube-scheduler', usage: 'server', ...loopback },
    ...lazyLeaves(req.clusterTreeSANs),
  };
  const leaves: [PkiName, CertKey, LeafRequest][] = [
    [
      PkiFile.etcdServer,
      etcdCA,
      {
        commonName: 'etcd-server',
        usage: 'server+client',
        ...loopback,
        dnsNames: [...loopback.dnsNames, ...(req.etcdSANs ?? [])],
      },
    ],
    [PkiFile.apiserverEtcdClient, etcdCA, { commonName: 'kube-apiserver-etcd-client', usage: 'client' }],
    [PkiFile.frontProxyClient, frontProxyCA, { commonName: 'front-proxy-client', usage: 'client' }],
    ...CLUSTER_LEAVES.map(([name, kind]): [PkiName, CertKey, LeafRequest] => [
      name,
      kind === 'serving' && previous ? previous : signing,
      requests[name]!,
    ]),
  ];
  const [issued, sa] = await Promise.all([
    Promise.all(
      leaves.map(([, issuer, r]) =>
        issueCertificate(issuer, { ...r, ...(validityMs ? { validityMs } : {}) }),
      ),
    ),
    readFile(join(dir, ServiceAccountKey.private), 'utf8')
      .then(async (privateKeyPem) => ({
        privateKeyPem,
        publicKeyPem: await readFile(join(dir, ServiceAccountKey.public), 'utf8'),
      }))
      .catch(() => createServiceAccountKeyPair()),
  ]);
  leaves.forEach(([name], i) => put(name, issued[i]!));
  files.set(ServiceAccountKey.private, sa.privateKeyPem);
  files.set(ServiceAccountKey.public, sa.publicKeyPem);
  files.set(MARKER, requestHash);

  await opts.commit?.(files);
  await swapIn(dir, files);
  return { ...(await certificateExpiry(dir)), requestHash, reissued: true };
}

/**
 * Writes `files` into a new generation beside `dir` and points `dir` at it with one rename, then
 * deletes every other generation, as the kubelet's atomic writer does for Secret volumes:
 * deleting the files a component watches (inotify follows the link to them) is what makes the
 * API server reload its serving certificate and CA bundles; it never polls them.
 */
async function swapIn(dir: string, files: PkiSet): Promise<void> {
  const bad = [...files.keys()].find((name) => !isSetFile(name));
  if (bad !== undefined) throw new Error(`${bad} is no file of a certificate set: nothing written`);
  const parent = dirname(dir);
  const base = basename(dir);
  await mkdir(parent, { recursive: true });
  const gen = `${base}.gen-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  for (const d of new Set([...files.keys()].map((name) => dirname(join(parent, gen, name)))))
    await mkdir(d, { recursive: true, mode: 0o700 });
  // Private keys are for the owner only.
  const write = ([name, data]: [string, string]) =>
    writeFile(join(parent, gen, name), data, { mode: name.endsWith('.key') ? 0o600 : 0o644 });
  // The marker last: a generation with it is complete.
  await Promise.all([...files].filter(([name]) => name !== MARKER).map(write));
  const marker = files.get(MARKER);
  if (marker !== undefined) await write([MARKER, marker]);
  // A set from before generations (a plain directory) becomes a generation first: deleted below.
  if ((await lstat(dir).catch(() => undefined))?.isDirectory()) {
    await rm(join(parent, `${base}.gen-0-legacy`), { recursive: true, force: true });
    await rename(dir, join(parent, `${base}.gen-0-legacy`));
  }
  const link = join(parent, `${base}.link-${randomBytes(4).toString('hex')}`);
  await symlink(gen, link);
  await rename(link, dir);
  await removeStaleGenerations(dir);
}

/**
 * Deletes every generation `dir` does not point to, and what a crash left (links, and the
 * directories of the swap before generations), once `dir` is a complete set.
 */
async function removeStaleGenerations(dir: string): Promise<void> {
  const parent = dirname(dir);
  const base = basename(dir);
  if (!(await lstat(dir).catch(() => undefined))?.isSymbolicLink()) return;
  if ((await readFile(join(dir, MARKER), 'utf8').catch(() => '')) === '') return;
  const current = await readlink(dir);
  for (const entry of await readdir(parent)) {
    const stale = entry.startsWith(`${base}.gen-`) && entry !== current;
    const leftover =
      entry.startsWith(`${base}.link-`) ||
      entry.startsWith(`${base}.tmp-`) ||
      entry.startsWith(`${base}.old-`);
    if (stale || leftover) await rm(join(parent, entry), { recursive: true, force: true });
  }
}

/**
 * A crash between the two renames of a first swap leaves no `dir` but a generation beside it:
 * point `dir` back at the newest complete one, so nothing is ever issued anew over it.
 */
async function recoverSet(dir: string): Promise<void> {
  if (await lstat(dir).catch(() => undefined)) return;
  const parent = dirname(dir);
  const base = basename(dir);
  const entries = await readdir(parent).catch(() => [] as string[]);
  let best: { name: string; at: number } | undefined;
  for (const name of entries.filter((e) => e.startsWith(`${base}.gen-`))) {
    const hasMarker = await readFile(join(parent, name, MARKER), 'utf8').catch(() => undefined);
    const hasCA = await readFile(join(parent, name, `${PkiFile.ca}.crt`), 'utf8').catch(() => undefined);
    if (!hasCA) continue;
    const at = (await lstat(join(parent, name))).mtimeMs + (hasMarker ? 1e15 : 0);
    if (!best || at > best.at) best = { name, at };
  }
  if (best) await symlink(best.name, dir);
}

/**
 * Adds what a set written by an older version lacks and a component needs to start: the CSR
 * signer (the controller-manager), clusterTree's and CoreDNS's leaves (issued lazily elsewhere
 * then, or not at all before clusterTree). A no-op for a current set; the next renewal issues
 * the whole set anew anyway.
 */
export async function ensureCurrentFiles(dir: string): Promise<void> {
  await recoverSet(dir);
  const ca = await loadPair(dir, PkiFile.ca);
  const signing: CertKey = { certPem: firstCertificate(ca.certPem), keyPem: ca.keyPem };
  const write = async (name: PkiName, pair: CertKey) => {
    await writeFile(keyPath(dir, name), pair.keyPem, { mode: 0o600 });
    await writeFile(certPath(dir, name), pair.certPem, { mode: 0o644 });
  };
  if (!(await readPair(dir, PkiFile.clusterSigner))) await write(PkiFile.clusterSigner, signing);
  for (const [name, request] of Object.entries(lazyLeaves()) as [PkiName, LeafRequest][])
    if (!(await readPair(dir, name))) await write(name, await issueCertificate(signing, request));
}

/**
 * The complete set `dir` holds, every file by its relative path; undefined when there is none
 * (no directory, or one a restore or an interrupted first issue left without its marker).
 */
export async function readSet(dir: string): Promise<Map<string, string> | undefined> {
  await recoverSet(dir);
  // One generation, whatever a swap does meanwhile (its files stay until the swap deletes them).
  const gen = await realpath(dir).catch(() => undefined);
  if (!gen || !(await readFile(join(gen, MARKER), 'utf8').catch(() => undefined))) return undefined;
  const files = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const entry of await readdir(join(gen, rel), { withFileTypes: true })) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && isSetFile(path)) files.set(path, await readFile(join(gen, path), 'utf8'));
    }
  };
  await walk('');
  return files;
}

/**
 * Whether `path` can name a file of a certificate set: a certificate or key (`etcd/ca.crt`), a
 * service-account key or a record of the set; never `..` nor any other path of one's choosing.
 * Names a later version may add pass, so an older worker still syncs a newer set.
 */
export function isSetFile(path: string): boolean {
  const records: string[] = [
    ServiceAccountKey.public,
    ServiceAccountKey.private,
    MARKER,
    CA_GENERATION,
    CA_RETIRES_AT,
  ];
  if (records.includes(path)) return true;
  // A record's name is no directory (`ca-generation/x.crt` would clash with the file).
  const first = path.split('/')[0]!;
  return !records.includes(first) && /^[a-z0-9][a-z0-9-]*(\/[a-z0-9][a-z0-9-]*)?\.(crt|key)$/.test(path);
}

/** sha256 over a set's paths and contents, in path order: tells two sets apart. */
export function setChecksum(files: PkiSet): string {
  const h = createHash('sha256');
  for (const path of [...files.keys()].sort()) h.update(`${path}\0${files.get(path)!}\0`);
  return h.digest('hex');
}

/**
 * Makes `dir` hold exactly `files` (a set kept elsewhere), swapped in as a new generation as
 * writeControlPlanePki does, so running components reload it.
 */
export async function writeSet(dir: string, files: PkiSet): Promise<void> {
  if (!files.get(MARKER)) throw new Error(`refusing to write an incomplete certificate set into ${dir}`);
  await swapIn(dir, files);
}

/** sha256 of a certificate (the first of a bundle), shortened: what status and logs show. */
export function fingerprint(pem: string): string {
  return createHash('sha256').update(firstCertificate(pem)).digest('hex').slice(0, 16);
}
