/**
 * Backup and restore on real components: scheduled backups (a Temporal schedule) with their
 * retention, `kosmos-vc backup --to`, a corrupted or truncated file refused with nothing created,
 * and a deleted tenant restored from its backup with the same objects, tokens and CA.
 */
import { randomUUID } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { backupScheduleId } from '../../src/activities/backup.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  eventually,
  host,
  kosmosVc,
  kubectl,
  newStateDir,
  refOf,
  statusAs,
  tenantKubeconfig,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
let stateDir: string;
let taskQueue: string;

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('backup');
  taskQueue = `backup-${randomUUID()}`;
  operator = await testOperator({ stateDir, taskQueue, namespace });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
});

/** Who the API server at `server` says `token` is (a SelfSubjectReview). */
async function whoami(server: string, caPem: string, token: string): Promise<string> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(
      `${server}/apis/authentication.k8s.io/v1/selfsubjectreviews`,
      {
        method: 'POST',
        ca: caPem,
        agent: false,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => {
          if (res.statusCode !== 201) return reject(new Error(`HTTP ${res.statusCode}: ${body}`));
          resolve(
            (JSON.parse(body) as { status: { userInfo: { username: string } } }).status.userInfo.username,
          );
        });
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }));
  });
}

/** The built CLI, with the operator's Temporal address, task queue and state directory. */
const cli = (...args: string[]) =>
  kosmosVc(args, {
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    KOSMOS_VC_TASK_QUEUE: taskQueue,
    KOSMOS_VC_STATE_DIR: stateDir,
  });

describe('backup and restore', () => {
  it('backs a tenant up on its schedule and by hand, refuses a bad file, and restores a deleted tenant intact', async () => {
    const created = await createVirtualCluster(namespace, 'source', {
      backup: { schedule: '@every 10s', retention: 2 },
    });
    const vc = await waitForPhase(namespace, 'source', 'Ready');
    const kubeconfig = await tenantKubeconfig(stateDir, vc);
    await kubectl(kubeconfig, 'create', 'namespace', 'app');
    await kubectl(kubeconfig, '-n', 'app', 'create', 'configmap', 'kept', '--from-literal=answer=42');
    await kubectl(kubeconfig, '-n', 'app', 'create', 'secret', 'generic', 'pw', '--from-literal=pw=s3cret');
    await kubectl(kubeconfig, '-n', 'app', 'create', 'serviceaccount', 'robot');
    const token = (
      await kubectl(kubeconfig, '-n', 'app', 'create', 'token', 'robot', '--duration=1h')
    ).trim();

    // By hand: written to the backup directory and copied out.
    const file = join(stateDir, 'source.tar.gz');
    const said = await cli('backup', `${namespace}/source`, '--to', file);
    expect(said).toMatch(/backup written: .*\/backups\/.*\/source\/manual-.*\.tar\.gz/);
    expect(said).toContain(`copied to ${file}`);

    // On the schedule, keeping the last two: the first one written is pruned later.
    const dir = join(stateDir, 'backups', namespace, 'source');
    const schedule = operator.client.schedule.getHandle(backupScheduleId(refOf(created)));
    const scheduled = async () => (await readdir(dir)).filter((f) => f.startsWith('scheduled-')).sort();
    const first = await eventually('a scheduled backup', async () => (await scheduled())[0], 60_000);
    await eventually(
      'the first scheduled backup pruned, two kept',
      async () => {
        const now = await scheduled();
        return !now.includes(first) && now.length === 2 ? true : undefined;
      },
      90_000,
    );
    expect((await schedule.describe()).info.recentActions.length).toBeGreaterThanOrEqual(3);
    expect(await readdir(dir)).toEqual(expect.arrayContaining([expect.stringMatching(/^manual-/)]));
    expect(
      (await host().getVirtualCluster({ namespace, name: 'source' }))?.status?.conditions?.find(
        (c) => c.type === 'BackupScheduled',
      )?.status,
    ).toBe('True');

    // A corrupted or truncated file is refused before anything is created.
    const bytes = await readFile(file);
    const corrupted = Buffer.from(bytes);
    const at = Math.floor(corrupted.length / 2);
    corrupted[at] = corrupted[at]! ^ 0xff;
    await writeFile(join(stateDir, 'corrupted.tar.gz'), corrupted);
    await writeFile(join(stateDir, 'truncated.tar.gz'), bytes.subarray(0, Math.floor(bytes.length * 0.8)));
    for (const bad of ['corrupted.tar.gz', 'truncated.tar.gz']) {
      const e = (await cli('restore', `${namespace}/bad`, '--from', join(stateDir, bad)).catch(
        (x: unknown) => x,
      )) as { code?: number; stderr?: string };
      expect(e.code, bad).toBe(1);
      expect(e.stderr, bad).toMatch(/invalid backup/);
    }
    expect(await host().getVirtualCluster({ namespace, name: 'bad' })).toBeUndefined();

    // Deleted: its schedule goes, its backups stay.
    await deleteVirtualCluster(namespace, 'source');
    await waitForGone(namespace, 'source');
    await expect(schedule.describe()).rejects.toThrow();
    expect((await readdir(dir)).length).toBeGreaterThanOrEqual(3);

    // Restored under a new name: the same objects, the same service-account key (the old token
    // works) and the same CA (the old admin certificate is accepted at the new endpoint).
    const restored = await cli('restore', `${namespace}/copy`, '--from', file);
    expect(restored).toMatch(new RegExp(`created from the backup of ${namespace}/source`));
    expect(restored).toMatch(/restored in \d+s/);
    const copy = await waitForPhase(namespace, 'copy', 'Ready');
    expect(copy.status?.conditions?.find((c) => c.type === 'BackupRestored')?.status).toBe('True');
    const copyConfig = await tenantKubeconfig(stateDir, copy);
    expect(
      await kubectl(copyConfig, '-n', 'app', 'get', 'configmap', 'kept', '-o', 'jsonpath={.data.answer}'),
    ).toBe('42');
    expect(
      Buffer.from(
        await kubectl(copyConfig, '-n', 'app', 'get', 'secret', 'pw', '-o', 'jsonpath={.data.pw}'),
        'base64',
      ).toString(),
    ).toBe('s3cret');
    const server = copy.status!.apiServerEndpoint!;
    expect(server).not.toBe(vc.status?.apiServerEndpoint);
    expect(await whoami(server, credentialsOf(await readFile(copyConfig, 'utf8')).caPem, token)).toBe(
      'system:serviceaccount:app:robot',
    );
    const oldAdmin = credentialsOf(Buffer.from(vc.spec.kubeconfig!, 'base64').toString());
    const copyCreds = credentialsOf(Buffer.from(copy.spec.kubeconfig!, 'base64').toString());
    expect(await statusAs(server, copyCreds.caPem, oldAdmin)).toBe(200);

    await deleteVirtualCluster(namespace, 'copy');
    await waitForGone(namespace, 'copy');
  });
});
