/**
 * The embedded host's persistent volumes (src/runtime/storage.ts): a claim of the default
 * StorageClass gets a directory of the real node, what one pod writes there the next one reads,
 * and the directory goes with the claim.
 */
import { StorageV1Api, type V1Pod } from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import { LOCAL_STORAGE_CLASS } from '../../src/runtime/storage.js';
import { statusCode } from '../../src/api/kubeClient.js';
import { createKwokNodes, createNamespace, deleteNodes, eventually, host } from '../support/harness.js';

const realNode = inject('realNode');
const SIMULATED = 'storage-roomy-kwok';
let namespace: string;

beforeAll(async () => {
  if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
  namespace = await createNamespace('storage');
});
afterAll(async () => {
  await deleteNodes([SIMULATED]);
  await host()
    .core.deleteNamespace({ name: namespace })
    .catch(() => undefined);
});

/**
 * A pod of the claim `data`, placed by the scheduler: the class allows the real node alone, so
 * it goes there even beside an emptier simulated node.
 */
const pod = (name: string, script: string, image: string): V1Pod => ({
  metadata: { name, namespace },
  spec: {
    restartPolicy: 'Never',
    tolerations: [{ operator: 'Exists' }],
    containers: [
      {
        name: 'main',
        image,
        command: ['sh', '-c', script],
        volumeMounts: [{ name: 'data', mountPath: '/data' }],
      },
    ],
    volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data' } }],
  },
});

async function finished(name: string): Promise<string> {
  const core = host().core;
  await eventually(
    `pod ${name} to finish`,
    async () => {
      const p = await core.readNamespacedPod({ name, namespace });
      if (p.status?.phase === 'Failed') throw new Error(`${name} failed`);
      return p.status?.phase === 'Succeeded' ? p : undefined;
    },
    120_000,
  );
  return core.readNamespacedPodLog({ name, namespace });
}

describe('local persistent volumes', () => {
  it('binds a claim of the default class on the real node, keeps its data between pods, removes it with the claim', async () => {
    const core = host().core;
    const storage = host().kubeConfig.makeApiClient(StorageV1Api);
    const sc = await storage.readStorageClass({ name: LOCAL_STORAGE_CLASS });
    expect(sc.metadata?.annotations?.['storageclass.kubernetes.io/is-default-class']).toBe('true');
    const busybox = (await resolveBinaries()).node!.toolsImage;
    // A simulated node with far more room than the real one: the scheduler would prefer it.
    await createKwokNodes([SIMULATED]);

    // No class named: the default one.
    await core.createNamespacedPersistentVolumeClaim({
      namespace,
      body: {
        metadata: { name: 'data', namespace },
        spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } } },
      },
    });
    await core.createNamespacedPod({ namespace, body: pod('writer', 'echo kept > /data/file', busybox) });
    await finished('writer');
    const claim = await core.readNamespacedPersistentVolumeClaim({ name: 'data', namespace });
    expect(claim.status?.phase).toBe('Bound');
    expect(claim.spec?.storageClassName).toBe(LOCAL_STORAGE_CLASS);
    expect((await core.readNamespacedPod({ name: 'writer', namespace })).spec?.nodeName).toBe(realNode);
    const pv = await core.readPersistentVolume({ name: claim.spec!.volumeName! });
    // A hostPath volume (the provisioner's default type) under the host's volumes, on the real node.
    const dir = pv.spec?.hostPath?.path;
    expect(dir?.startsWith(`${join(inject('stateRoot'), 'host', 'storage', 'volumes')}/`), dir).toBe(true);
    expect(JSON.stringify(pv.spec?.nodeAffinity)).toContain(`"${realNode}"`);
    // The real node's filesystem is this machine's.
    expect(await readFile(join(dir!, 'file'), 'utf8')).toBe('kept\n');

    await core.createNamespacedPod({ namespace, body: pod('reader', 'cat /data/file', busybox) });
    expect((await finished('reader')).trim()).toBe('kept');

    for (const name of ['writer', 'reader']) await core.deleteNamespacedPod({ name, namespace });
    await core.deleteNamespacedPersistentVolumeClaim({ name: 'data', namespace });
    await eventually(
      'the volume and its directory removed',
      async () => {
        const gone = await core.readPersistentVolume({ name: pv.metadata!.name! }).then(
          () => false,
          (e: unknown) => {
            if (statusCode(e) !== 404) throw e;
            return true;
          },
        );
        return gone && !existsSync(dir!) ? true : undefined;
      },
      120_000,
    );
  });
});
