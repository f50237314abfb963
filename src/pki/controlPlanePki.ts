/**
 * The certificate set of one Kubernetes control plane (a tenant's, or the embedded host's),
 * written under one directory. Re-running with the same request changes nothing; a changed
 * request (new SANs) re-issues the leaves and keeps the CAs and the service-account key, so
 * issued kubeconfigs stay trusted.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { formatIPv4, parseIPv4Cidr } from '../api/virtualCluster.js';
import { createCA, createServiceAccountKeyPair, issueCertificate, type CertKey } from './certificates.js';

export interface ControlPlanePkiRequest {
  clusterName: string;
  serviceCIDR: string;
  advertiseAddress: string;
  dnsDomain?: string;
  extraSANs?: readonly string[];
}

/** File names inside a PKI directory; keys are written with mode 0600. */
export const PkiFile = {
  ca: 'ca',
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

export interface PkiResult {
  /** sha256 of the request; stored so a re-run with the same request does nothing. */
  requestHash: string;
  /** sha256 of the cluster CA certificate: what kubeconfigs trust. */
  caFingerprint: string;
  reissued: boolean;
}

const MARKER = '.complete';
/** Raised whenever the set of files changes (2: apiserver-kubelet-client). */
const PKI_SET_VERSION = 2;

export async function writeControlPlanePki(dir: string, req: ControlPlanePkiRequest): Promise<PkiResult> {
  // The set's version is part of the hash: a set from an older version gets its new leaves.
  const requestHash = createHash('sha256')
    .update(JSON.stringify({ ...req, set: PKI_SET_VERSION }))
    .digest('hex');
  const marker = join(dir, MARKER);
  const existing = await readFile(marker, 'utf8').catch(() => undefined);
  if (existing === requestHash) {
    const ca = await loadPair(dir, PkiFile.ca);
    return { requestHash, caFingerprint: fingerprint(ca.certPem), reissued: false };
  }

  // Build the new set in a sibling directory and swap it in, so a crash halfway leaves either
  // the old complete set or none.
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  const files = new Map<string, { data: string; secret: boolean }>();
  const put = (name: PkiName, pair: CertKey): void => {
    files.set(`${name}.crt`, { data: pair.certPem, secret: false });
    files.set(`${name}.key`, { data: pair.keyPem, secret: true });
  };

  const ca = (await readPair(dir, PkiFile.ca)) ?? (await createCA(`${req.clusterName}-ca`));
  const frontProxyCA =
    (await readPair(dir, PkiFile.frontProxyCA)) ?? (await createCA(`${req.clusterName}-front-proxy-ca`));
  const etcdCA = (await readPair(dir, PkiFile.etcdCA)) ?? (await createCA(`${req.clusterName}-etcd-ca`));
  put(PkiFile.ca, ca);
  put(PkiFile.frontProxyCA, frontProxyCA);
  put(PkiFile.etcdCA, etcdCA);

  const loopback = { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', req.advertiseAddress] };
  put(
    PkiFile.etcdServer,
    await issueCertificate(etcdCA, { commonName: 'etcd-server', usage: 'server+client', ...loopback }),
  );
  put(
    PkiFile.apiserverEtcdClient,
    await issueCertificate(etcdCA, { commonName: 'kube-apiserver-etcd-client', usage: 'client' }),
  );
  put(
    PkiFile.frontProxyClient,
    await issueCertificate(frontProxyCA, { commonName: 'front-proxy-client', usage: 'client' }),
  );
  put(
    PkiFile.apiserver,
    await issueCertificate(ca, { commonName: 'kube-apiserver', usage: 'server', ...apiserverSANs(req) }),
  );
  put(
    PkiFile.admin,
    await issueCertificate(ca, {
      commonName: 'kubernetes-admin',
      organizations: ['system:masters'],
      usage: 'client',
    }),
  );
  put(
    PkiFile.apiserverKubeletClient,
    await issueCertificate(ca, {
      commonName: 'kube-apiserver-kubelet-client',
      organizations: ['system:masters'],
      usage: 'client',
    }),
  );
  put(
    PkiFile.controllerManager,
    await issueCertificate(ca, { commonName: 'system:kube-controller-manager', usage: 'client' }),
  );
  put(
    PkiFile.scheduler,
    await issueCertificate(ca, { commonName: 'system:kube-scheduler', usage: 'client' }),
  );
  put(
    PkiFile.controllerManagerServing,
    await issueCertificate(ca, { commonName: 'kube-controller-manager', usage: 'server', ...loopback }),
  );
  put(
    PkiFile.schedulerServing,
    await issueCertificate(ca, { commonName: 'kube-scheduler', usage: 'server', ...loopback }),
  );

  const sa = await readFile(join(dir, ServiceAccountKey.private), 'utf8')
    .then(async (privateKeyPem) => ({
      privateKeyPem,
      publicKeyPem: await readFile(join(dir, ServiceAccountKey.public), 'utf8'),
    }))
    .catch(() => createServiceAccountKeyPair());
  files.set(ServiceAccountKey.private, { data: sa.privateKeyPem, secret: true });
  files.set(ServiceAccountKey.public, { data: sa.publicKeyPem, secret: false });

  for (const [name, { data, secret }] of files) {
    const path = join(tmp, name);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(path, data, { mode: secret ? 0o600 : 0o644 });
  }
  await writeFile(join(tmp, MARKER), requestHash);
  await mkdir(dirname(dir), { recursive: true });
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch(() => undefined);
  await rename(tmp, dir);
  await rm(old, { recursive: true, force: true });
  return { requestHash, caFingerprint: fingerprint(ca.certPem), reissued: true };
}

export function fingerprint(pem: string): string {
  return createHash('sha256').update(pem).digest('hex').slice(0, 16);
}
