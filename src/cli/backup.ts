/**
 * `kosmos-vc backup <vc> [--to file]` and `kosmos-vc restore <new-vc> --from <file>`
 * (docs/adr/0011). A backup runs as a Temporal workflow on a worker (it has the tenant's etcd)
 * and lands in the operator's backup directory; `--to` copies it out. A restore checks the file
 * first (a corrupted or truncated one is refused before anything is created), copies it into
 * the backup directory and creates the new VirtualCluster with spec.restore naming it.
 * Both read the backup directory, so they run on the operator's machine, as the process runtime
 * keeps every tenant there.
 */
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { chmod, copyFile, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { hostCluster } from './host.js';
import type { BackupResult } from '../activities/backup.js';
import { InvalidBackupError, readBackup } from '../backup/archive.js';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, VirtualClusterSpec } from '../api/virtualCluster.js';
import { defaultStateDir, readOperatorEnv } from '../worker/config.js';
import type { backupWorkflow } from '../workflows/backup.js';
import { CommandError } from './inspect.js';
import { UsageError, parseTarget } from './resize.js';

export interface BackupRequest {
  target: string;
  namespace?: string;
  kubeconfig?: string;
  to?: string;
  timeout?: string;
}

export interface RestoreRequest {
  name: string;
  from: string;
  namespace?: string;
  kubeconfig?: string;
  timeout?: string;
}

function seconds(value: string | undefined, fallback: number): number {
  const n = Number(value ?? fallback);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError('--timeout must be a number of seconds');
  return n * 1000;
}

/** The operator's backup directory, as the operator on this machine has it. */
export function backupDirectory(env = readOperatorEnv()): string {
  return env.KOSMOS_VC_BACKUP_DIR ?? join(env.KOSMOS_VC_STATE_DIR ?? defaultStateDir(), 'backups');
}

/** Copies `from` to `to` through a temporary file beside it, readable by its owner only. */
async function copyAtomically(from: string, to: string): Promise<void> {
  const tmp = join(dirname(to), `.${basename(to)}.partial-${process.pid}`);
  try {
    await copyFile(from, tmp);
    await chmod(tmp, 0o600);
    await rename(tmp, to);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export async function backupCommand(r: BackupRequest, out: (line: string) => void): Promise<number> {
  const target = parseTarget(r.target, r.namespace);
  const timeoutMs = seconds(r.timeout, 300);
  const env = readOperatorEnv();
  const vc = await hostCluster(r.kubeconfig).getVirtualCluster(target);
  if (!vc) throw new CommandError(`VirtualCluster ${target.namespace}/${target.name} not found`);
  const ref = { ...target, uid: vc.metadata.uid };
  const connection = await Connection.connect({ address: env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' });
  let result: BackupResult | { skipped: string };
  try {
    const client = new Client({ connection, namespace: env.TEMPORAL_NAMESPACE });
    out(`${target.namespace}/${target.name}: taking a backup (etcd snapshot, CAs, service-account key)`);
    const run = client.workflow.execute<typeof backupWorkflow>('backupWorkflow', {
      taskQueue: env.KOSMOS_VC_TASK_QUEUE,
      workflowId: `backup/${ref.namespace}/${ref.name}/${ref.uid}/manual-${Date.now()}`,
      args: [{ ref, kind: 'manual' }],
      workflowExecutionTimeout: timeoutMs,
    });
    result = await run.catch((e: unknown) => {
      if (e instanceof WorkflowFailedError) {
        // WorkflowFailedError <- ActivityFailure <- ApplicationFailure: the last says why.
        const inner = e.cause?.cause;
        const cause = inner instanceof Error ? inner : e.cause;
        throw new CommandError(`backup failed: ${cause?.message ?? e.message}`);
      }
      throw e;
    });
  } finally {
    await connection.close();
  }
  if ('skipped' in result) throw new CommandError(`no backup taken: ${result.skipped}`);
  out(`backup written: ${result.file} (${result.size} bytes, sha256 ${result.sha256})`);
  if (r.to) {
    await copyAtomically(result.file, r.to);
    out(`copied to ${r.to} (it holds the tenant's CA keys: keep it safe)`);
  }
  out(`restore it with: kosmos-vc restore <new-name> -n ${target.namespace} --from ${r.to ?? result.file}`);
  return 0;
}

export async function restoreCommand(r: RestoreRequest, out: (line: string) => void): Promise<number> {
  const { namespace, name } = parseTarget(r.name, r.namespace);
  const timeoutMs = seconds(r.timeout, 300);
  // Checked here first: a bad file is refused before anything is created.
  const scratch = await mkdtemp(join(tmpdir(), 'kosmos-vc-restore-'));
  let manifest;
  try {
    ({ manifest } = await readBackup(r.from, scratch).then(async (b) => {
      await rm(b.dir, { recursive: true, force: true });
      return b;
    }));
  } catch (e) {
    if (e instanceof InvalidBackupError) throw new CommandError(e.message);
    throw e;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const host = hostCluster(r.kubeconfig);
  if (await host.getVirtualCluster({ namespace, name }))
    throw new CommandError(`VirtualCluster ${namespace}/${name} exists already: restore into a new name`);

  // The source's spec, as a new tenant: its own restore, its CA rotation count (the restored CA
  // starts over at 0) and sleep do not carry over.
  const { restore: _r, sleep: _s, kubeconfig: _k, ...source } = manifest.spec;
  const certificates = source.certificates as Record<string, unknown> | undefined;
  if (certificates) {
    const { caRotation: _c, ...rest } = certificates;
    source.certificates = rest;
  }
  const file = `imported-${new Date().toISOString().replace(/[:.]/g, '-')}.tar.gz`;
  const spec = VirtualClusterSpec.safeParse({ ...source, restore: { backup: `${name}/${file}` } });
  if (!spec.success)
    throw new CommandError(
      `the backup's spec is not valid here: ${spec.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const dir = join(backupDirectory(), namespace, name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await copyAtomically(r.from, join(dir, file));
  try {
    await host.custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace,
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace }, spec: spec.data },
    });
  } catch (e) {
    await rm(join(dir, file), { force: true });
    throw e;
  }
  out(
    `${namespace}/${name}: created from the backup of ${manifest.source.namespace}/${manifest.source.name} taken ${manifest.createdAt}`,
  );

  const started = Date.now();
  let last = '';
  for (;;) {
    const vc = await host.getVirtualCluster({ namespace, name });
    const s = vc?.status;
    const line = `${s?.phase ?? 'Pending'}: ${s?.message ?? ''}`;
    const secs = Math.round((Date.now() - started) / 1000);
    if (line !== last) out(`[${secs}s] ${line}`);
    last = line;
    if (s?.phase === 'Ready') {
      out(`restored in ${secs}s; its kubeconfig: kosmos-vc kubeconfig ${namespace}/${name}`);
      return 0;
    }
    if (s?.phase === 'Failed') {
      out(`restore failed: ${s.message}`);
      return 1;
    }
    if (Date.now() - started > timeoutMs) {
      out(
        `gave up after ${secs}s; the workflow keeps working on it (kosmos-vc describe ${namespace}/${name})`,
      );
      return 1;
    }
    await new Promise((res) => setTimeout(res, 500));
  }
}
