/**
 * Real workloads in a tenant on the real node, as a user runs them with the tenant's kubeconfig
 * and kubectl: shared by the workload tests of both runtimes (the design's E2E 1 and 2).
 */
import type { V1Pod } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { routeOf } from '../../src/node/network.js';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import { eventually, host, kubectl, tenantCore } from './harness.js';

export interface TestImages {
  agnhost: string;
  busybox: string;
  kubectl: string;
}

/** The names setup pushed the test images under (upstream's). */
export async function testImages(): Promise<TestImages> {
  const b = await resolveBinaries();
  if (!b.node) throw new Error('no images on this machine (npm run setup builds them)');
  const name = async (key: string) => (await readFile(join(b.node!.imagesDir, `${key}.name`), 'utf8')).trim();
  return { agnhost: await name('agnhost'), busybox: await name('busybox'), kubectl: await name('kubectl') };
}

/** Waits until the tenant pod is Running with every container ready. */
export async function runningPod(kubeconfig: string, name: string, ns = 'default'): Promise<V1Pod> {
  return eventually(
    `pod ${name} Running`,
    async () => {
      const p = await tenantCore(kubeconfig).readNamespacedPod({ name, namespace: ns });
      if (p.status?.phase === 'Failed') throw new Error(`${name} failed: ${p.status.message}`);
      return p.status?.phase === 'Running' && p.status.containerStatuses?.every((c) => c.ready)
        ? p
        : undefined;
    },
    120_000,
  );
}

/**
 * What `wget -qO-` from the tenant pod `client` gets, or the error it prints. (Debian's static
 * busybox crashes on wget's own -T: the time limit is `timeout`'s.)
 */
export async function fetchFromClient(kubeconfig: string, url: string): Promise<string> {
  try {
    return (await kubectl(kubeconfig, 'exec', 'client', '--', 'timeout', '5', 'wget', '-qO-', url)).trim();
  } catch (e) {
    return `error: ${(e as { stderr?: string }).stderr ?? String(e)}`;
  }
}

/** The Running, not terminating, pods of `web` by name. */
async function webPods(kubeconfig: string): Promise<string[]> {
  return (
    await tenantCore(kubeconfig).listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })
  ).items
    .filter((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp)
    .map((p) => p.metadata!.name!);
}

/**
 * E2E 1's workloads: a busybox pod `client` and a two-replica Deployment `web` of agnhost's
 * `serve-hostname` on port 80, all Running on the tenant's nodes; returns the client pod.
 */
export async function runClientAndWeb(kubeconfig: string, images: TestImages): Promise<V1Pod> {
  const k = (...args: string[]) => kubectl(kubeconfig, ...args);
  await k(
    'run',
    'client',
    `--image=${images.busybox}`,
    '--restart=Never',
    '--command',
    '--',
    'sleep',
    '3600',
  );
  await k(
    'create',
    'deployment',
    'web',
    `--image=${images.agnhost}`,
    '--replicas=2',
    '--',
    '/agnhost',
    'serve-hostname',
    '--port=80',
  );
  const client = await runningPod(kubeconfig, 'client');
  await eventually('2 web pods Running', async () => (await webPods(kubeconfig)).length === 2 || undefined);
  return client;
}

/**
 * The design's E2E 2 on `web` (from runClientAndWeb): exposed, it answers the client pod by short
 * name, FQDN and ClusterIP (the tenant's ClusterIP is its host Service's, in `hostNs`, routed on
 * this machine) with a name of its pods; at three replicas all three answer, at one only that
 * one; deleted, neither name nor address answers.
 */
export async function serviceCarriesTraffic(kubeconfig: string, hostNs: string): Promise<void> {
  const k = (...args: string[]) => kubectl(kubeconfig, ...args);
  const fetchIt = (url: string) => fetchFromClient(kubeconfig, url);
  const pods = () => webPods(kubeconfig);
  await k('expose', 'deployment', 'web', '--port=80');
  const ip = await eventually('web to take its host ClusterIP', async () => {
    const s = await tenantCore(kubeconfig).readNamespacedService({ name: 'web', namespace: 'default' });
    const h = (await host().core.listNamespacedService({ namespace: hostNs })).items.find(
      (x) => x.metadata?.annotations?.['kosmos.io/name'] === 'web' || x.metadata?.name?.startsWith('web-x-'),
    );
    return h && s.spec?.clusterIP === h.spec?.clusterIP ? s.spec!.clusterIP! : undefined;
  });
  expect(await routeOf(ip)).toContain('dev kvc0');
  for (const url of ['http://web', 'http://web.default.svc.cluster.local', `http://${ip}`]) {
    const reply = await eventually(`${url} to answer`, async () => {
      const r = await fetchIt(url);
      return r.startsWith('error') ? undefined : r;
    });
    expect(await pods()).toContain(reply);
  }
  await k('scale', 'deployment', 'web', '--replicas=3');
  await eventually('the third pod to answer', async () => {
    const names = await pods();
    if (names.length !== 3) return undefined;
    const seen = new Set<string>();
    for (let i = 0; i < 30 && seen.size < 3; i++) seen.add(await fetchIt('http://web'));
    return [...seen].every((s) => names.includes(s)) && seen.size === 3;
  });
  await k('scale', 'deployment', 'web', '--replicas=1');
  const only = await eventually('one pod left', async () => {
    const names = await pods();
    return names.length === 1 ? names[0] : undefined;
  });
  await eventually('only the remaining pod to answer', async () => {
    for (let i = 0; i < 6; i++) if ((await fetchIt('http://web')) !== only) return undefined;
    return true;
  });
  await k('delete', 'service', 'web');
  await eventually('the deleted Service to stop answering', async () => {
    const [byName, byIP] = [await fetchIt('http://web'), await fetchIt(`http://${ip}`)];
    return byName.startsWith('error') && byIP.startsWith('error');
  });
}
