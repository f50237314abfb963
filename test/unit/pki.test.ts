import { X509Certificate, createPublicKey, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, issueCertificate } from '../../src/pki/certificates.js';
import {
  PkiFile,
  ServiceAccountKey,
  apiserverSANs,
  certPath,
  keyPath,
  writeControlPlanePki,
  type ControlPlanePkiRequest,
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
