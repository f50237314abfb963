/**
 * Backups of a tenant (docs/adr/0011): an etcd snapshot plus its CAs and service-account key in
 * one file in the operator's backup directory; restoring one into a new tenant's directory
 * before its certificates are issued; the Temporal schedule that takes them on spec.backup.
 */
import { ApplicationFailure } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { ScheduleNotFoundError, ScheduleOverlapPolicy, type ScheduleSpec } from '@temporalio/client';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import { ETCD_SNAPSHOT, InvalidBackupError, readBackup, writeBackup } from '../backup/archive.js';
import {
  DEFAULT_SERVICE_CIDR,
  parseDuration,
  type BackupSchedule,
  type VirtualClusterRef,
} from '../api/virtualCluster.js';
import { firstCertificate } from '../pki/certificates.js';
import {
  PkiFile,
  ServiceAccountKey,
  certPath,
  keyPath,
  readSet,
  type PkiSet,
} from '../pki/controlPlanePki.js';
import type { Binaries } from '../runtime/binaries.js';
import { etcdDataDir, pkiDir, type ControlPlaneLayout } from '../runtime/controlPlane.js';
import type { ControlPlaneRuntime } from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import type { HostCluster } from './hostCluster.js';
import { FailureType, type StepInput, type TenantAllocation } from './types.js';

const run = promisify(execFile);

/** The keys a restored tenant needs to serve its data again; leaves are issued anew. */
const KEPT_PAIRS = [PkiFile.ca, PkiFile.frontProxyCA, PkiFile.etcdCA] as const;

export interface BackupResult {
  /** `<name>/<file>`: what spec.restore.backup names, within the VirtualCluster's namespace. */
  backup: string;
  file: string;
  size: number;
  sha256: string;
  createdAt: string;
}

export interface BackupDeps {
  host: HostCluster;
  runtime: ControlPlaneRuntime;
  binaries: () => Promise<Binaries>;
  /** <backupDir>/<namespace>/<name>/<kind>-<time>.tar.gz */
  backupDir: string;
  tenantDir: (ref: VirtualClusterRef) => string;
  layoutOf: (a: TenantAllocation) => ControlPlaneLayout;
  /**
   * The tenant's certificate set as its Secret holds it (ADR 14); undefined for a tenant whose
   * set is not stored yet (then the copy in its directory is the set).
   */
  storedPki: (ref: VirtualClusterRef) => Promise<PkiSet | undefined>;
  /** The Temporal client and task queue scheduled backups run on (absent: no schedules). */
  schedules?: { client: Client; taskQueue: string };
  logger: Logger;
}

/** The Temporal schedule of one VirtualCluster's backups. */
export const backupScheduleId = (ref: VirtualClusterRef): string =>
  `backup/${ref.namespace}/${ref.name}/${ref.uid}`;

/** A backup's file, from its `<name>/<file>` within a namespace; undefined if it leaves the directory. */
export function backupFile(backupDir: string, namespace: string, backup: string): string | undefined {
  const root = resolve(backupDir, namespace);
  const file = resolve(root, backup);
  return file.startsWith(root + sep) && /^[^/]+\/[^/]+$/.test(backup) ? file : undefined;
}

/** Writes the files `keys` of `set` under `dir` (keys 0600); a set without one of them fails. */
async function writeSetFiles(dir: string, set: PkiSet, keys: readonly string[]): Promise<void> {
  for (const key of keys) {
    const data = set.get(key);
    if (data === undefined) throw new Error(`the certificate set has no ${key}`);
    await mkdir(dirname(join(dir, key)), { recursive: true, mode: 0o700 });
    await writeFile(join(dir, key), data, { mode: key.endsWith('.key') ? 0o600 : 0o644 });
  }
}

/** etcd's snapshot and restore reach etcd on this machine (etcdctl, etcdutl): not yet its pod. */
const podsUnsupported = (what: string) =>
  ApplicationFailure.nonRetryable(
    `${what} of a control plane in pods (KOSMOS_VC_RUNTIME=kubernetes) is not built yet (ADR 14)`,
    FailureType.InvalidSpec,
  );

export function createBackupActivities(deps: BackupDeps) {
  const log = (ref: VirtualClusterRef) => deps.logger.child({ vc: `${ref.namespace}/${ref.name}` });
  const invalid = (e: InvalidBackupError) =>
    ApplicationFailure.nonRetryable(e.message, FailureType.InvalidBackup);

  return {
    /**
     * Takes a consistent etcd snapshot of a running tenant (etcdctl) and packs it with its CAs and
     * service-account key. Scheduled backups beyond `retention` are deleted, oldest first; manual
     * ones are kept.
     */
    async backupTenant(input: {
      ref: VirtualClusterRef;
      kind: 'manual' | 'scheduled';
      retention?: number;
    }): Promise<BackupResult | { skipped: string }> {
      const { ref } = input;
      const vc = await deps.host.getVirtualCluster(ref);
      if (!vc || vc.metadata.uid !== ref.uid) {
        // A schedule its tenant's teardown did not know of: it ends here.
        if (input.kind === 'scheduled' && deps.schedules)
          await deps.schedules.client.schedule
            .getHandle(backupScheduleId(ref))
            .delete()
            .catch(() => undefined);
        throw ApplicationFailure.nonRetryable(
          `VirtualCluster ${ref.namespace}/${ref.name} (uid ${ref.uid}) no longer exists`,
          FailureType.TenantGone,
        );
      }
      const dir = deps.tenantDir(ref);
      const allocation = await readFile(join(dir, 'allocation.json'), 'utf8').then(
        (t) => JSON.parse(t) as TenantAllocation,
        () => undefined,
      );
      if (!allocation)
        throw ApplicationFailure.nonRetryable(
          `${ref.namespace}/${ref.name} has no control plane on this worker's machine (not provisioned yet?)`,
          FailureType.TenantGone,
        );
      if (allocation.runtime === 'kubernetes') throw podsUnsupported('a backup');
      // Its own id, or the warm-pool slot's it claimed.
      const running = await deps.runtime.list(allocation.id);
      const asleep = !running.some((c) => c.name === 'etcd' && c.running);
      // Nothing changes while a tenant sleeps: a scheduled backup then has nothing new to keep.
      if (asleep && input.kind === 'scheduled') return { skipped: 'the tenant is asleep' };
      if (asleep)
        throw ApplicationFailure.nonRetryable(
          `${ref.namespace}/${ref.name} is not running (asleep?): wake it to back it up`,
          FailureType.TenantNotRunning,
        );
      const l = deps.layoutOf(allocation);
      // One whole set, read without touching the copy a step of the tenant may be writing: the
      // Secret's, or (not stored yet) the copy's current generation.
      const set = (await deps.storedPki(ref)) ?? (await readSet(pkiDir(l)));
      if (!set)
        throw ApplicationFailure.nonRetryable(
          `${ref.namespace}/${ref.name} has no certificates yet (not provisioned?)`,
          FailureType.TenantGone,
        );
      await mkdir(deps.backupDir, { recursive: true, mode: 0o700 });
      const work = await mkdtemp(join(deps.backupDir, '.work-'));
      try {
        // etcdctl's client files, beside the archive's contents (not in it).
        const pki = join(work, 'client');
        await writeSetFiles(pki, set, [
          `${PkiFile.etcdCA}.crt`,
          `${PkiFile.apiserverEtcdClient}.crt`,
          `${PkiFile.apiserverEtcdClient}.key`,
        ]);
        const bins = await deps.binaries();
        await run(bins.etcdctl, [
          `--endpoints=https://${l.address}:${l.ports.etcdClient}`,
          `--cacert=${certPath(pki, PkiFile.etcdCA)}`,
          `--cert=${certPath(pki, PkiFile.apiserverEtcdClient)}`,
          `--key=${keyPath(pki, PkiFile.apiserverEtcdClient)}`,
          'snapshot',
          'save',
          join(work, ETCD_SNAPSHOT),
        ]);
        await writeSetFiles(join(work, 'pki'), set, [
          ...KEPT_PAIRS.flatMap((name) => [`${name}.crt`, `${name}.key`]),
          ...Object.values(ServiceAccountKey),
        ]);
        // The signing CA alone: a restored tenant does not carry on an old CA's overlap.
        for (const name of KEPT_PAIRS)
          await writeFile(certPath(join(work, 'pki'), name), firstCertificate(set.get(`${name}.crt`)!), {
            mode: 0o644,
          });
        await rm(pki, { recursive: true, force: true });
        const createdAt = new Date().toISOString();
        // The uid tells this tenant's backups from those of an earlier one of the same name,
        // which retention must never touch.
        const name = `${input.kind}-${ref.uid.slice(0, 8)}-${createdAt.replace(/[:.]/g, '-')}.tar.gz`;
        const file = join(deps.backupDir, ref.namespace, ref.name, name);
        const { kubeconfig: _published, ...spec } = vc.spec;
        const written = await writeBackup(work, file, { createdAt, source: ref, spec });
        if (input.kind === 'scheduled' && input.retention)
          await prune(
            join(deps.backupDir, ref.namespace, ref.name),
            `scheduled-${ref.uid.slice(0, 8)}-`,
            input.retention,
          );
        log(ref).info('backup written', { file, size: written.size });
        return { backup: `${ref.name}/${name}`, file, createdAt, ...written };
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    },

    /**
     * Restores a backup into a new tenant's directory, before its certificates are issued: the
     * etcd data directory (etcdutl, after checking the snapshot) and the CAs and service-account
     * key, so the restored control plane serves the same objects and trusts the same tokens and
     * client certificates. A backup that does not check out fails the step as InvalidBackup.
     */
    async restoreBackup(
      input: StepInput & { backup: string },
    ): Promise<{ source: string; createdAt: string }> {
      const { ref, allocation } = input;
      const file = backupFile(deps.backupDir, ref.namespace, input.backup);
      if (!file)
        throw ApplicationFailure.nonRetryable(
          `spec.restore.backup must be <name>/<file> of a backup in namespace ${ref.namespace}`,
          FailureType.InvalidBackup,
        );
      if (allocation.runtime === 'kubernetes') throw podsUnsupported('a restore');
      const l = deps.layoutOf(allocation);
      const marker = join(l.dir, 'restored-from');
      const done = await readFile(marker, 'utf8').catch(() => undefined);
      // Done already (a retry whose first attempt's result was lost): the file may be gone since.
      if (done?.startsWith(`${input.backup}\n`)) {
        const [, source = '?', createdAt = '?'] = done.split('\n');
        return { source, createdAt };
      }
      let unpacked;
      try {
        unpacked = await readBackup(file, join(l.dir, '.restore'));
      } catch (e) {
        if (e instanceof InvalidBackupError) throw invalid(e);
        throw e;
      }
      const { dir, manifest } = unpacked;
      const source = `${manifest.source.namespace}/${manifest.source.name}`;
      try {
        // The restored objects carry their ClusterIPs: the tenant must have the range they are from.
        const cidr = manifest.spec.serviceCIDR;
        const from = typeof cidr === 'string' ? cidr : DEFAULT_SERVICE_CIDR;
        if (from !== allocation.serviceCIDR)
          throw invalid(
            new InvalidBackupError(
              file,
              `it is of a tenant with serviceCIDR ${from}; this one has ${allocation.serviceCIDR}`,
            ),
          );
        const bins = await deps.binaries();
        const snapshot = join(dir, ETCD_SNAPSHOT);
        await run(bins.etcdutl, ['snapshot', 'status', snapshot, '--write-out=json']).catch((e: Error) => {
          throw invalid(new InvalidBackupError(file, `the etcd snapshot does not check out: ${e.message}`));
        });
        // A half-done earlier attempt is started over.
        await rm(etcdDataDir(l), { recursive: true, force: true });
        await rm(pkiDir(l), { recursive: true, force: true });
        const peer = `https://${l.address}:${l.ports.etcdPeer}`;
        await run(bins.etcdutl, [
          'snapshot',
          'restore',
          snapshot,
          `--data-dir=${etcdDataDir(l)}`,
          `--name=${l.id}`,
          `--initial-cluster=${l.id}=${peer}`,
          `--initial-advertise-peer-urls=${peer}`,
        ]);
        const pki = pkiDir(l);
        await mkdir(join(pki, 'etcd'), { recursive: true, mode: 0o700 });
        for (const name of KEPT_PAIRS) {
          await copyFile(certPath(join(dir, 'pki'), name), certPath(pki, name));
          await copyFile(keyPath(join(dir, 'pki'), name), keyPath(pki, name));
        }
        for (const f of Object.values(ServiceAccountKey)) await copyFile(join(dir, 'pki', f), join(pki, f));
        await writeFile(marker, `${input.backup}\n${source}\n${manifest.createdAt}`);
        log(ref).info('backup restored', { backup: input.backup, from: source, taken: manifest.createdAt });
        return { source, createdAt: manifest.createdAt };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },

    /** Creates, changes or (null) deletes the VirtualCluster's backup schedule. */
    async ensureBackupSchedule(input: {
      ref: VirtualClusterRef;
      backup: BackupSchedule | null;
    }): Promise<void> {
      const s = deps.schedules;
      if (!s) {
        if (input.backup)
          throw ApplicationFailure.nonRetryable('this operator runs no schedules', FailureType.InvalidSpec);
        return;
      }
      const id = backupScheduleId(input.ref);
      const handle = s.client.schedule.getHandle(id);
      if (!input.backup) {
        await handle.delete().catch((e: unknown) => {
          if (!(e instanceof ScheduleNotFoundError)) throw e;
        });
        return;
      }
      const every = /^@every (.+)$/.exec(input.backup.schedule)?.[1];
      const spec: ScheduleSpec = every
        ? { intervals: [{ every: parseDuration(every) }] }
        : { cronExpressions: [input.backup.schedule] };
      const action = {
        type: 'startWorkflow' as const,
        workflowType: 'backupWorkflow',
        taskQueue: s.taskQueue,
        workflowId: id,
        args: [{ ref: input.ref, kind: 'scheduled', retention: input.backup.retention ?? DEFAULT_RETENTION }],
      };
      const exists = await handle.describe().then(
        () => true,
        (e: unknown) => {
          if (e instanceof ScheduleNotFoundError) return false;
          throw e;
        },
      );
      try {
        if (exists) await handle.update((prev) => ({ ...prev, spec, action }));
        else
          await s.client.schedule.create({
            scheduleId: id,
            spec,
            action,
            policies: { overlap: ScheduleOverlapPolicy.SKIP },
            memo: { virtualCluster: `${input.ref.namespace}/${input.ref.name}` },
          });
      } catch (e) {
        // The schedule's own parser refused it (a cron line our pattern let through).
        if (e instanceof TypeError || (e as { code?: number }).code === 3)
          throw ApplicationFailure.nonRetryable(
            `spec.backup.schedule "${input.backup.schedule}" was refused: ${(e as Error).message}`,
            FailureType.InvalidSpec,
          );
        throw e;
      }
      log(input.ref).info('backup schedule set', { schedule: input.backup.schedule });
    },
  };
}

export const DEFAULT_RETENTION = 7;

/** Deletes the oldest of this tenant's scheduled backups in `dir` beyond `keep` (names sort by time). */
async function prune(dir: string, prefix: string, keep: number): Promise<void> {
  const scheduled = (await readdir(dir)).filter((f) => f.startsWith(prefix) && f.endsWith('.tar.gz')).sort();
  for (const f of scheduled.slice(0, Math.max(0, scheduled.length - keep)))
    await rm(join(dir, basename(f)), { force: true });
}
