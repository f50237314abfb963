import { X509Certificate, createPublicKey, createPrivateKey } from 'node:crypto';
import { cp, lstat, mkdtemp, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, issueCertificate } from '../../src/pki/certificates.js';
import { kubeconfigPath } from '../../src/runtime/controlPlane.js';
import { ensureOperatorKubeconfig } from '../../src/runtime/kubeconfigs.js';
import { parse } from 'yaml';
import {
  CARotationInProgressError,
  PkiFile,
  ServiceAccountKey,
  certificateExpiry,
  PkiMissingError,
  ensureCurrentFiles,
  apiserverSANs,
  certPath,
  keyPath,
  readSet,
  setChecksum,
  writeControlPlanePki,
  writeSet,
  type ControlPlanePkiRequest,
  type PkiSet,
} from '../../src/pki/controlPlanePki.js';

const req: ControlPlanePkiRequest = {
  clusterName: 'demo',
  serviceCIDR: '10.96.0.0/12',
  advertiseAddress: '127.0.0.1',
  extraSANs: ['tenant.example.com', '192.0.2.10'],
};

let dir: string;
const cert = async (name: (typeof PkiFile)[keyof typeof PkiFile]) =>
  new X509Certificate(await readFile(certPath(dir, name)));

beforeAll(async () => {
  dir = join(await mkdtemp(join(tmpdir(), 'kvc-pki-')), 'pki');
  await writeControlPlanePki(dir, req);
});
afterAll(async () => {
  await rm(join(dir, '..'), { recursive: true, force: true });
});

describe('control-plane PKI', () => {
  it('signs every leaf with the right CA, and no leaf verifies against another CA', async () => {
    const ca = await cert(PkiFile.ca);
    const etcdCA = await cert(PkiFile.etcdCA);
    const frontProxyCA = await cert(PkiFile.frontProxyCA);
    expect(ca.ca && etcdCA.ca && frontProxyCA.ca).toBe(true);
    for (const leaf of [PkiFile.apiserver, PkiFile.admin, PkiFile.controllerManager, PkiFile.scheduler]) {
      const c = await cert(leaf);
      expect(c.ca).toBe(false);
      expect(c.verify(ca.publicKey)).toBe(true);
      expect(c.checkIssued(ca)).toBe(true);
      expect(c.verify(etcdCA.publicKey)).toBe(false);
    }
    for (const leaf of [PkiFile.etcdServer, PkiFile.apiserverEtcdClient]) {
      expect((await cert(leaf)).verify(etcdCA.publicKey)).toBe(true);
      expect((await cert(leaf)).verify(ca.publicKey)).toBe(false);
    }
    expect((await cert(PkiFile.frontProxyClient)).verify(frontProxyCA.publicKey)).toBe(true);
  });

  it('gives the apiserver every SAN a client may dial', async () => {
    const c = await cert(PkiFile.apiserver);
    for (const name of [
      'kubernetes',
      'kubernetes.default.svc.cluster.local',
      'localhost',
      'tenant.example.com',
    ]) {
      expect(c.checkHost(name)).toBe(name);
    }
    for (const ip of ['127.0.0.1', '10.96.0.1', '192.0.2.10']) expect(c.checkIP(ip)).toBe(ip);
    expect(c.checkHost('other.example.com')).toBeUndefined();
    expect(apiserverSANs({ ...req, serviceCIDR: '10.100.0.0/16' }).ipAddresses).toContain('10.100.0.1');
  });

  it('puts identities and key usages where Kubernetes looks for them', async () => {
    const admin = await cert(PkiFile.admin);
    expect(admin.subject).toContain('O=system:masters');
    expect(admin.subject).toContain('CN=kubernetes-admin');
    expect(admin.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']); // clientAuth only
    expect((await cert(PkiFile.apiserver)).keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // serverAuth only
    expect((await cert(PkiFile.etcdServer)).keyUsage?.sort()).toEqual([
      '1.3.6.1.5.5.7.3.1',
      '1.3.6.1.5.5.7.3.2',
    ]);
    expect((await cert(PkiFile.controllerManager)).subject).toContain('CN=system:kube-controller-manager');
    expect((await cert(PkiFile.scheduler)).subject).toContain('CN=system:kube-scheduler');
  });

  it('keeps the service-account key pair separate from every TLS key', async () => {
    const saPub = createPublicKey(await readFile(join(dir, ServiceAccountKey.public)));
    const saPem = saPub.export({ type: 'spki', format: 'pem' });
    for (const name of Object.values(PkiFile)) {
      if (name === PkiFile.previousCA) continue; // only during a CA rotation
      const leafPub = (await cert(name)).publicKey.export({ type: 'spki', format: 'pem' });
      expect(leafPub).not.toEqual(saPem);
    }
    const saKey = createPrivateKey(await readFile(join(dir, ServiceAccountKey.private)));
    expect(createPublicKey(saKey).export({ type: 'spki', format: 'pem' })).toEqual(saPem);
    expect((await stat(join(dir, ServiceAccountKey.private))).mode & 0o777).toBe(0o600);
    expect((await stat(keyPath(dir, PkiFile.ca))).mode & 0o777).toBe(0o600);
  });

  it('does nothing on a re-run with the same request and keeps the CAs when SANs change', async () => {
    const before = await readFile(certPath(dir, PkiFile.apiserver), 'utf8');
    const caBefore = await readFile(certPath(dir, PkiFile.ca), 'utf8');
    expect((await writeControlPlanePki(dir, req)).reissued).toBe(false);
    expect(await readFile(certPath(dir, PkiFile.apiserver), 'utf8')).toEqual(before);
    const again = await writeControlPlanePki(dir, { ...req, extraSANs: ['new.example.com'] });
    expect(again.reissued).toBe(true);
    expect(await readFile(certPath(dir, PkiFile.ca), 'utf8')).toEqual(caBefore);
    expect((await cert(PkiFile.apiserver)).checkHost('new.example.com')).toBe('new.example.com');
  });

  it("names etcd's and clusterTree's Services in their serving certificates when asked (pods: ADR 14)", async () => {
    expect((await cert(PkiFile.clusterTreeKubelet)).checkHost('clustertree.ns.svc')).toBeUndefined();
    await writeControlPlanePki(dir, {
      ...req,
      etcdSANs: ['etcd.ns.svc'],
      clusterTreeSANs: ['clustertree.ns.svc', 'clustertree.ns.svc.cluster.local'],
    });
    const kubelet = await cert(PkiFile.clusterTreeKubelet);
    expect(kubelet.checkHost('clustertree.ns.svc')).toBe('clustertree.ns.svc');
    expect(kubelet.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect((await cert(PkiFile.etcdServer)).checkHost('etcd.ns.svc')).toBe('etcd.ns.svc');
    // Without them (a process tenant's request) the names go again.
    await writeControlPlanePki(dir, req);
    expect((await cert(PkiFile.clusterTreeKubelet)).checkHost('clustertree.ns.svc')).toBeUndefined();
  });

  it('issues leaves that node:crypto verifies against a fresh CA', async () => {
    const ca = await createCA('t');
    const leaf = await issueCertificate(ca, {
      commonName: 'x',
      usage: 'server',
      dnsNames: ['x.test'],
      ipAddresses: ['127.0.0.1'],
    });
    const c = new X509Certificate(leaf.certPem);
    expect(c.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(c.checkHost('x.test')).toBe('x.test');
    expect(c.checkIP('127.0.0.1')).toBe('127.0.0.1');
  });
});

describe('renewal and CA rotation', () => {
  let root: string;
  let pki: string;
  const minute = 60_000;
  const RETIRES = '2030-01-01T00:00:00.000Z';
  const r = { ...req, leafValidityMs: 3 * minute };
  const read = (name: (typeof PkiFile)[keyof typeof PkiFile]) => readFile(certPath(pki, name), 'utf8');
  const x509 = async (name: (typeof PkiFile)[keyof typeof PkiFile]) => new X509Certificate(await read(name));
  const bundle = async () =>
    (await read(PkiFile.ca)).match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  const CLIENT = [
    PkiFile.admin,
    PkiFile.controllerManager,
    PkiFile.scheduler,
    PkiFile.clusterTree,
    PkiFile.coredns,
  ];
  const SERVING = [PkiFile.apiserver, PkiFile.controllerManagerServing, PkiFile.clusterTreeKubelet];

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'kvc-pki-rotate-'));
    pki = join(root, 'pki');
    await writeControlPlanePki(pki, r);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('issues leaves for the requested lifetime and reports the earliest expiry', async () => {
    const e = await certificateExpiry(pki);
    const left = Date.parse(e.notAfter) - Date.now();
    expect(left).toBeGreaterThan(2.9 * minute);
    expect(left).toBeLessThanOrEqual(3 * minute);
    expect(Date.parse(e.caNotAfter) - Date.now()).toBeGreaterThan(3000 * 24 * 60 * minute);
    expect(e.caGeneration).toBe(0);
    expect(e.previousCAFingerprint).toBeUndefined();
    expect((await lstat(pki)).isSymbolicLink()).toBe(true);
  });

  it('renews every leaf and keeps the CAs and the service-account key', async () => {
    const leaves = [...CLIENT, ...SERVING, PkiFile.etcdServer, PkiFile.frontProxyClient];
    const before = new Map(
      await Promise.all(leaves.map(async (n) => [n, (await x509(n)).serialNumber] as const)),
    );
    const ca = await read(PkiFile.ca);
    const sa = await readFile(join(pki, ServiceAccountKey.private), 'utf8');
    const renewed = await writeControlPlanePki(pki, r, { renew: true });
    expect(renewed.reissued).toBe(true);
    for (const n of leaves) expect((await x509(n)).serialNumber).not.toBe(before.get(n));
    expect(await read(PkiFile.ca)).toBe(ca);
    expect(await readFile(join(pki, ServiceAccountKey.private), 'utf8')).toBe(sa);
    // Only the current generation is kept: deleting the old one is what tells watchers.
    expect((await readdir(root)).filter((e) => e.startsWith('pki.gen-'))).toHaveLength(1);
  });

  it('rotates the CA with an overlap: both trusted, clients from the new one, servers from the old', async () => {
    const old = new X509Certificate((await bundle())[0]!);
    const started = await writeControlPlanePki(pki, r, {
      caRotation: { action: 'start', generation: 1, retiresAt: RETIRES },
    });
    expect(started.caGeneration).toBe(1);
    expect(started.previousCAFingerprint).toBeDefined();
    const trusted = (await bundle()).map((pem) => new X509Certificate(pem));
    expect(trusted).toHaveLength(2);
    const [next, previous] = trusted as [X509Certificate, X509Certificate];
    expect(previous.fingerprint256).toBe(old.fingerprint256);
    expect(next.fingerprint256).not.toBe(old.fingerprint256);
    for (const n of CLIENT) expect((await x509(n)).checkIssued(next)).toBe(true);
    for (const n of SERVING) expect((await x509(n)).checkIssued(previous)).toBe(true);
    expect((await x509(PkiFile.previousCA)).fingerprint256).toBe(old.fingerprint256);
    // The CSR signer is the new CA alone (the controller-manager refuses a bundle).
    expect(await bundle()).toHaveLength(2);
    expect((await read(PkiFile.clusterSigner)).match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    expect((await x509(PkiFile.clusterSigner)).fingerprint256).toBe(next.fingerprint256);

    // A retry of the same rotation changes nothing; another one must wait for the retirement.
    expect(
      (
        await writeControlPlanePki(pki, r, {
          caRotation: { action: 'start', generation: 1, retiresAt: RETIRES },
        })
      ).reissued,
    ).toBe(false);
    await expect(
      writeControlPlanePki(pki, r, { caRotation: { action: 'start', generation: 2, retiresAt: RETIRES } }),
    ).rejects.toBeInstanceOf(CARotationInProgressError);
    // Renewal during the overlap keeps the split and when the overlap ends.
    expect((await writeControlPlanePki(pki, r, { renew: true })).previousCARetiresAt).toBe(RETIRES);
    expect((await x509(PkiFile.apiserver)).checkIssued(previous)).toBe(true);
    expect((await x509(PkiFile.admin)).checkIssued(next)).toBe(true);

    const retired = await writeControlPlanePki(pki, r, { caRotation: { action: 'retire' } });
    expect(retired.previousCAFingerprint).toBeUndefined();
    const after = (await bundle()).map((pem) => new X509Certificate(pem));
    expect(after.map((c) => c.fingerprint256)).toEqual([next.fingerprint256]);
    for (const n of [...CLIENT, ...SERVING]) expect((await x509(n)).checkIssued(next)).toBe(true);
    await expect(read(PkiFile.previousCA)).rejects.toThrow();
    expect((await certificateExpiry(pki)).caGeneration).toBe(1);
  });

  it("gives a set from before the operator's identity its kubeconfig", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvc-operator-'));
    try {
      const l = {
        id: 't',
        dir,
        address: '127.0.0.1',
        ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
        serviceCIDR: '10.96.0.0/12',
      };
      await writeControlPlanePki(join(dir, 'pki'), req);
      await rm(certPath(join(dir, 'pki'), PkiFile.operator));
      await rm(keyPath(join(dir, 'pki'), PkiFile.operator));
      await ensureOperatorKubeconfig(l);
      const conf = await readFile(kubeconfigPath(l, 'operator'), 'utf8');
      const user = (parse(conf) as { users: { user: Record<string, string> }[] }).users[0]!.user;
      const cert = new X509Certificate(Buffer.from(user['client-certificate-data']!, 'base64'));
      expect(cert.subject).toContain('CN=kosmos-vc:operator');
      expect(cert.subject).toContain('O=system:masters');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('moves a set from before generations into one, keeping its CA', async () => {
    const legacyRoot = await mkdtemp(join(tmpdir(), 'kvc-pki-legacy-'));
    try {
      const legacy = join(legacyRoot, 'pki');
      await writeControlPlanePki(legacy, req);
      // Make it a plain directory, as sets written before generations are.
      const target = join(legacyRoot, 'plain');
      await cp(legacy, target, { recursive: true, dereference: true });
      await rm(legacy);
      for (const e of await readdir(legacyRoot))
        if (e.startsWith('pki.gen-')) await rm(join(legacyRoot, e), { recursive: true });
      await rename(target, legacy);
      const ca = await readFile(certPath(legacy, PkiFile.ca), 'utf8');
      // Such a set has no CSR signer files: the controller-manager's start adds them.
      await rm(certPath(legacy, PkiFile.clusterSigner));
      await rm(keyPath(legacy, PkiFile.clusterSigner));
      // ... nor (before clusterTree) clusterTree's and CoreDNS's leaves.
      for (const n of [PkiFile.clusterTree, PkiFile.clusterTreeKubelet, PkiFile.coredns]) {
        await rm(certPath(legacy, n));
        await rm(keyPath(legacy, n));
      }
      await ensureCurrentFiles(legacy);
      expect(await readFile(certPath(legacy, PkiFile.clusterSigner), 'utf8')).toBe(ca);
      const caCert = new X509Certificate(ca);
      for (const n of [PkiFile.clusterTree, PkiFile.clusterTreeKubelet, PkiFile.coredns])
        expect(new X509Certificate(await readFile(certPath(legacy, n))).checkIssued(caCert)).toBe(true);
      await writeControlPlanePki(legacy, req, { renew: true });
      expect((await lstat(legacy)).isSymbolicLink()).toBe(true);
      expect(await readFile(certPath(legacy, PkiFile.ca), 'utf8')).toBe(ca);

      // A crash between the first swap's renames leaves no link: the set is found again, never
      // made anew (which would replace every CA).
      await rm(legacy);
      expect((await writeControlPlanePki(legacy, req, { renew: true })).reissued).toBe(true);
      expect(await readFile(certPath(legacy, PkiFile.ca), 'utf8')).toBe(ca);
      // Renewing where there is no set at all is refused.
      await expect(
        writeControlPlanePki(join(legacyRoot, 'none'), req, { renew: true }),
      ).rejects.toBeInstanceOf(PkiMissingError);
    } finally {
      await rm(legacyRoot, { recursive: true, force: true });
    }
  });
});

describe('a set kept elsewhere (the Secret of ADR 14)', () => {
  it('reads a whole set, writes it into an empty directory unchanged, and commits a new set before the swap', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kvc-pki-kept-'));
    try {
      const first = join(root, 'a', 'pki');
      const kept: PkiSet[] = [];
      await writeControlPlanePki(first, req, { commit: (files) => Promise.resolve(void kept.push(files)) });
      const set = (await readSet(first))!;
      expect(kept).toHaveLength(1);
      expect(setChecksum(kept[0]!)).toBe(setChecksum(set));
      expect([...set.keys()]).toContain('etcd/ca.key');
      expect([...set.keys()]).toContain(ServiceAccountKey.private);
      // Nothing issued again: no commit.
      await writeControlPlanePki(first, req, { commit: (files) => Promise.resolve(void kept.push(files)) });
      expect(kept).toHaveLength(1);

      // Another worker's empty directory gets the same set; a re-run there issues nothing.
      const second = join(root, 'b', 'pki');
      expect(await readSet(second)).toBeUndefined();
      await writeSet(second, set);
      expect(setChecksum((await readSet(second))!)).toBe(setChecksum(set));
      expect((await stat(keyPath(second, PkiFile.etcdCA))).mode & 0o777).toBe(0o600);
      expect((await stat(join(second, ServiceAccountKey.private))).mode & 0o777).toBe(0o600);
      expect((await stat(certPath(second, PkiFile.ca))).mode & 0o777).toBe(0o644);
      expect((await writeControlPlanePki(second, req)).reissued).toBe(false);

      // A commit that fails leaves the directory's set as it was.
      await expect(
        writeControlPlanePki(first, req, {
          renew: true,
          commit: () => Promise.reject(new Error('conflict')),
        }),
      ).rejects.toThrow('conflict');
      expect(setChecksum((await readSet(first))!)).toBe(setChecksum(set));
      // A renewal's new set differs, CAs kept.
      const renewed: PkiSet[] = [];
      await writeControlPlanePki(first, req, {
        renew: true,
        commit: (f) => Promise.resolve(void renewed.push(f)),
      });
      expect(setChecksum(renewed[0]!)).not.toBe(setChecksum(set));
      expect(renewed[0]!.get('ca.key')).toBe(set.get('ca.key'));
      expect(setChecksum((await readSet(first))!)).toBe(setChecksum(renewed[0]!));

      // A set without its marker (a restore's CAs alone) is no set; nor is one refused.
      await expect(writeSet(join(root, 'c'), new Map([['ca.crt', 'x']]))).rejects.toThrow(/incomplete/);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
