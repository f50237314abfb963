/**
 * The images setup builds for the kubernetes runtime (ADR 14): the real node pulls each control
 * plane image from the loopback registry under upstream's name and runs its binary (static, in an
 * image with nothing else); and the operator's image `npm run image` packs (clusterTree's pods
 * run it): its entry point is the kosmos-vc command, on Node.js 24, as a user without a name.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import { operatorImage } from '../../src/runtime/podWorkload.js';
import { createNamespace, eventually, host } from '../support/harness.js';

const realNode = inject('realNode');
let namespace: string;
let imagesDir: string;

beforeAll(async () => {
  if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
  imagesDir = (await resolveBinaries()).node!.imagesDir;
  namespace = await createNamespace('images');
});
afterAll(async () => {
  await host()
    .core.deleteNamespace({ name: namespace })
    .catch(() => undefined);
});

/** A pod on the real node that runs `command` once. */
const once = (name: string, image: string, command: string[], args?: string[]): V1Pod => ({
  metadata: { name, namespace },
  spec: {
    nodeName: realNode,
    restartPolicy: 'Never',
    // The node may be promoted to a tenant by a test before this one.
    tolerations: [{ operator: 'Exists' }],
    containers: [{ name: 'main', image, ...(command.length ? { command } : {}), ...(args ? { args } : {}) }],
  },
});

/** The log of a pod that ran to completion (fails at once on an image the node cannot pull). */
async function finished(name: string): Promise<string> {
  const core = host().core;
  await eventually(
    `${name} to finish`,
    async () => {
      const p = await core.readNamespacedPod({ name, namespace });
      const waiting = p.status?.containerStatuses?.[0]?.state?.waiting;
      if (waiting?.reason && /ErrImage|BackOff|Invalid/.test(waiting.reason))
        throw new Error(`${name}: ${waiting.reason}: ${waiting.message ?? ''}`);
      if (p.status?.phase === 'Failed')
        throw new Error(`${name} failed: ${await core.readNamespacedPodLog({ name, namespace })}`);
      return p.status?.phase === 'Succeeded' ? p : undefined;
    },
    120_000,
  );
  return core.readNamespacedPodLog({ name, namespace });
}

describe('control-plane images', () => {
  it('run each component on the real node under its upstream name', async () => {
    const expected: Record<string, RegExp> = {
      etcd: /etcd Version: 3\.6\.\d+/,
      'kube-apiserver': /Kubernetes v1\.\d+\.\d+/,
      'kube-controller-manager': /Kubernetes v1\.\d+\.\d+/,
      'kube-scheduler': /Kubernetes v1\.\d+\.\d+/,
    };
    const core = host().core;
    for (const name of Object.keys(expected)) {
      const image = (await readFile(join(imagesDir, `${name}.name`), 'utf8')).trim();
      expect(image).toMatch(new RegExp(`^registry\\.k8s\\.io/${name}:`));
      await core.createNamespacedPod({
        namespace,
        body: once(name, image, [`/usr/local/bin/${name}`, '--version']),
      });
    }
    for (const [name, version] of Object.entries(expected)) expect(await finished(name)).toMatch(version);
  });

  it("packs the operator: the kosmos-vc command on Node.js 24, and clusterTree's entry point", async () => {
    const image = (await operatorImage())!;
    expect(image).toMatch(/^localhost\/kosmos-vc\/operator:[0-9a-f]{16}$/);
    const core = host().core;
    // The entry point with arguments alone: the command's help.
    await core.createNamespacedPod({ namespace, body: once('operator-help', image, [], ['--help']) });
    // clusterTree's entry point, as its pods run it, and the user it runs as.
    await core.createNamespacedPod({
      namespace,
      body: once('operator-node', image, [
        '/usr/local/bin/node',
        '-e',
        'import("/app/dist/src/clustertree/config.js").then((m) => console.log(process.version, process.getuid(), typeof m.ClusterTreeConfig.parse))',
      ]),
    });
    expect(await finished('operator-help')).toMatch(/Usage: kosmos-vc .*\n[\s\S]*\bup\b/);
    expect((await finished('operator-node')).trim()).toMatch(/^v24\.\d+\.\d+ 65532 function$/);
  });
});
