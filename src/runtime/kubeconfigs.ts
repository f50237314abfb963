/**
 * The kubeconfigs of a control plane on this machine: rendered from its certificate set (the
 * components', an admin's, the operator's) or naming the set's files (the one process's
 * controller-manager and scheduler), written into its layout's directory.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { renderKubeconfig } from '../pki/kubeconfig.js';
import {
  certPath,
  ensureCurrentFiles,
  keyPath,
  loadPair,
  OPERATOR_USER,
  PkiFile,
} from '../pki/controlPlanePki.js';
import {
  apiserverURL,
  kubeconfigPath,
  pkiDir,
  placeOnMachine,
  RELOADING,
  reloadingKubeconfigName,
  type ControlPlaneLayout,
  type KubeconfigUser,
  type Placement,
  type ReloadingUser,
} from './controlPlane.js';

/** What the operator itself calls a tenant with: its own identity (ensureOperatorKubeconfig). */
export function operatorKubeconfig(l: ControlPlaneLayout): string {
  const own = kubeconfigPath(l, 'operator');
  return existsSync(own) ? own : kubeconfigPath(l, 'admin');
}

/** Writes the operator's kubeconfig where a set from an older version has none yet. */
export async function ensureOperatorKubeconfig(l: ControlPlaneLayout): Promise<void> {
  if (existsSync(kubeconfigPath(l, 'operator'))) return;
  await writeKubeconfigs(l);
}
/**
 * A kubeconfig of the controller-manager or scheduler that names its client certificate, key and
 * CA bundle by path (under `p.paths.pki`, as the component sees them) rather than holding them.
 * client-go re-reads such a certificate on new connections and at least every
 * CertCallbackRefreshDuration (kube-control-plane sets 10 s), and closes its connections when it
 * changed: a renewal (a new generation of the set behind the same path) reaches them without a
 * restart. client-go reloads the CA file too (ClientsAllowCARotation, on by default since 1.36),
 * but the controller-manager reads the same bundle once as --root-ca-file (what pods trust, in
 * `kube-root-ca.crt`), so a new bundle (a CA rotation) still needs a restart: oneProcessSpec's
 * `clients` digest holds it.
 */
export function reloadingKubeconfig(p: Placement, who: ReloadingUser): string {
  // Absolute: client-go takes a relative path in a kubeconfig from the kubeconfig's directory, and
  // a state directory may be given relative to the worker's.
  const pki = resolve(p.paths.pki);
  return renderKubeconfig({
    clusterName: p.id,
    server: p.apiserverURL,
    caPem: '',
    caFile: certPath(pki, PkiFile.ca),
    userName: who === 'scheduler' ? 'system:kube-scheduler' : 'system:kube-controller-manager',
    certFile: certPath(pki, RELOADING[who]),
    keyFile: keyPath(pki, RELOADING[who]),
  });
}

/** The admin kubeconfig of a control plane, as text. */
export async function adminKubeconfig(
  l: ControlPlaneLayout,
  clusterName: string,
  server = apiserverURL(l),
): Promise<string> {
  const pki = pkiDir(l);
  const [ca, admin] = await Promise.all([loadPair(pki, PkiFile.ca), loadPair(pki, PkiFile.admin)]);
  return renderKubeconfig({
    clusterName,
    server,
    caPem: ca.certPem,
    userName: 'kubernetes-admin',
    certPem: admin.certPem,
    keyPem: admin.keyPem,
  });
}

/**
 * The kubeconfigs the components and an admin use, by file name (`scheduler.conf`), rendered from
 * the certificate set in `pki` for an API server at `server`.
 */
export async function renderKubeconfigs(
  pki: string,
  server: string,
  clusterName: string,
): Promise<Record<`${KubeconfigUser}.conf`, string>> {
  const ca = await loadPair(pki, PkiFile.ca);
  const users = [
    ['controller-manager', PkiFile.controllerManager, 'system:kube-controller-manager'],
    ['scheduler', PkiFile.scheduler, 'system:kube-scheduler'],
    ['admin', PkiFile.admin, 'kubernetes-admin'],
    ['operator', PkiFile.operator, OPERATOR_USER],
  ] as const;
  const out: Partial<Record<`${KubeconfigUser}.conf`, string>> = {};
  for (const [file, name, user] of users) {
    const p = await loadPair(pki, name);
    out[`${file}.conf`] = renderKubeconfig({
      clusterName,
      server,
      caPem: ca.certPem,
      userName: user,
      certPem: p.certPem,
      keyPem: p.keyPem,
    });
  }
  return out as Record<`${KubeconfigUser}.conf`, string>;
}

/** Writes the kubeconfigs the components and an admin use (mode 0600) into the layout's directory. */
export async function writeKubeconfigs(l: ControlPlaneLayout): Promise<void> {
  const pki = pkiDir(l);
  // A set from an older version may lack a leaf written here (the operator's).
  await ensureCurrentFiles(pki);
  await mkdir(join(l.dir, 'kubeconfigs'), { recursive: true, mode: 0o700 });
  for (const [file, text] of Object.entries(await renderKubeconfigs(pki, apiserverURL(l), l.id)))
    await writeFile(join(l.dir, 'kubeconfigs', file), text, { mode: 0o600 });
  await writeReloadingKubeconfigs(l);
}

/**
 * Writes reloadingKubeconfig's two files for this machine's placement (unchanged ones not again:
 * they name paths, which a renewal does not change) and returns their texts.
 */
export async function writeReloadingKubeconfigs(l: ControlPlaneLayout): Promise<string[]> {
  const p = placeOnMachine(l);
  await mkdir(p.paths.kubeconfigs, { recursive: true, mode: 0o700 });
  const texts: string[] = [];
  for (const who of Object.keys(RELOADING) as ReloadingUser[]) {
    const text = reloadingKubeconfig(p, who);
    const path = join(p.paths.kubeconfigs, reloadingKubeconfigName(who));
    if ((await readFile(path, 'utf8').catch(() => undefined)) !== text)
      await writeFile(path, text, { mode: 0o600 });
    texts.push(text);
  }
  return texts;
}
