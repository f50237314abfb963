/**
 * Certificates and keys, made in-process with WebCrypto (ECDSA P-256) and @peculiar/x509.
 * Nothing here shells out or touches the disk; src/pki/controlPlanePki.ts lays the files out.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto, randomBytes } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const keyAlgorithm = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const signingAlgorithm = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface CertKey {
  certPem: string;
  keyPem: string;
}

export type Usage = 'server' | 'client' | 'server+client';

export interface LeafRequest {
  commonName: string;
  organizations?: readonly string[];
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  usage: Usage;
  /** Lifetime in milliseconds; one year when absent. */
  validityMs?: number;
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

function fromPem(pem: string): ArrayBuffer {
  const b64 = pem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, '');
  const buf = Buffer.from(b64, 'base64');
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
}

async function newKeyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(keyAlgorithm, true, ['sign', 'verify']);
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  return toPem(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function importPrivateKey(pem: string): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', fromPem(pem), keyAlgorithm, true, ['sign']);
}

function subject(commonName: string, organizations: readonly string[] = []): x509.JsonName {
  return [...organizations.map((o) => ({ O: [o] })), { CN: [commonName] }];
}

function serial(): string {
  // 16 random bytes with the top bit clear: a positive serial as RFC 5280 asks.
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** A self-signed certificate authority. */
export async function createCA(commonName: string, validDays = 3650): Promise<CertKey> {
  const keys = await newKeyPair();
  const now = Date.now();
  const name = new x509.Name(subject(commonName)).toString();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name,
    notBefore: new Date(now - 5 * 60 * 1000),
    notAfter: new Date(now + validDays * DAY_MS),
    keys,
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await privateKeyPem(keys.privateKey) };
}

/** The first certificate of a PEM bundle (a CA file may hold the signing CA and older ones). */
export function firstCertificate(pem: string): string {
  const m = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/.exec(pem);
  if (!m) throw new Error('no PEM certificate found');
  return m[0].endsWith('\n') ? m[0] : `${m[0]}\n`;
}

/** A leaf certificate signed by `ca` (the first certificate of `ca.certPem`). */
export async function issueCertificate(ca: CertKey, req: LeafRequest): Promise<CertKey> {
  const keys = await newKeyPair();
  const caCert = new x509.X509Certificate(firstCertificate(ca.certPem));
  const caKey = await importPrivateKey(ca.keyPem);
  const now = Date.now();
  const usages: string[] = [];
  if (req.usage !== 'client') usages.push(x509.ExtendedKeyUsage.serverAuth);
  if (req.usage !== 'server') usages.push(x509.ExtendedKeyUsage.clientAuth);
  const names: x509.JsonGeneralName[] = [
    ...(req.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(req.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
      true,
    ),
    new x509.ExtendedKeyUsageExtension(usages, false),
    await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: new x509.Name(subject(req.commonName, req.organizations)).toString(),
    issuer: caCert.subject,
    notBefore: new Date(now - 5 * 60 * 1000),
    notAfter: new Date(now + (req.validityMs ?? 365 * DAY_MS)),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm,
    extensions,
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await privateKeyPem(keys.privateKey) };
}

/** A key pair for signing service-account tokens; never a TLS key. */
export async function createServiceAccountKeyPair(): Promise<{
  publicKeyPem: string;
  privateKeyPem: string;
}> {
  const keys = await newKeyPair();
  return {
    publicKeyPem: toPem(await webcrypto.subtle.exportKey('spki', keys.publicKey), 'PUBLIC KEY'),
    privateKeyPem: await privateKeyPem(keys.privateKey),
  };
}
