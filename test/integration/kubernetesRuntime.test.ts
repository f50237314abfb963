/**
 * The kubernetes runtime (ADR 14) on the embedded host: a control plane's four components run
 * as pods on the real node from the images setup builds, with their files from Secrets, etcd's
 * data on a claim and the API server behind its Service; the admin kubeconfig works from this
 * machine; the apiserver's and etcd's pods come back when killed, data intact; an unchanged
 * spec rolls nothing; remove leaves no pod, Service or claim.
 */
import { AppsV1Api, type CoreV1Api } from '@kubernetes/client-node';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  apiserverSpec,
  controllerManagerSpec,
  etcdSpec,
  IMAGE_PROGRAMS,
  placeInHost,
  podSANs,
  schedulerSpec,
} from '../../src/runtime/controlPlane.js';
import { renderKubeconfigs } from '../../src/runtime/kubeconfigs.js';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetesRuntime.js';
import {
  CONTROL_PLANE_LABEL,
  ComponentStartError,
  controlPlaneImages,
  FILE_SOURCES,
  ownerLabel,
  storeFiles,
} from '../../src/runtime/podWorkload.js';
import { readSet, writeControlPlanePki } from '../../src/pki/controlPlanePki.js';
import type { ComponentName } from '../../src/runtime/types.js';
import {
  createNamespace,
  eventually,
  host,
  hostKubeConfig,
  kubectl,
  newStateDir,
} from '../support/harness.js';

const realNode = inject('realNode');
const OWNER = 'kruntime-test';
const API_SERVICE = 'kosmos-apiserver';
let namespace: string;
let dir: string;
let core: CoreV1Api;
let images: Partial<Record<ComponentName, string>>;

beforeAll(async () => {
  if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
  namespace = await createNamespace('kruntime');
  dir = await newStateDir();
  core = host().core;
  images = await controlPlaneImages((await resolveBinaries()).node!.imagesDir);
});
afterAll(async () => {
  await core.deleteNamespace({ name: namespace }).catch(() => undefined);
});

const runtimeWith = (imageOf: Partial<Record<ComponentName, string>>) =>
  new KubernetesRuntime({
    kubeConfig: hostKubeConfig(),
    images: imageOf,
    // Pods of the real node only (the simulated nodes run nothing); it may carry a tenant's taint.
    nodeSelector: { 'kubernetes.io/hostname': realNode },
    tolerations: [{ operator: 'Exists' }],
  });

const podOf = async (name: ComponentName) => {
  const pods = await core.listNamespacedPod({
    namespace,
    labelSelector: `${CONTROL_PLANE_LABEL}=${ownerLabel(OWNER)},app.kubernetes.io/name=${name}`,
  });
  return pods.items.filter((p) => !p.metadata?.deletionTimestamp);
};

describe('the kubernetes runtime', () => {
  it('runs a control plane as pods that survive being killed, and removes it without a trace', async () => {
    // The API server's Service first: its ClusterIP goes into the serving certificate.
    const svc = await core.createNamespacedService({
      namespace,
      body: { metadata: { name: API_SERVICE, namespace }, spec: { ports: [{ name: 'https', port: 443 }] } },
    });
    const clusterIP = svc.spec!.clusterIP!;
    const pki = join(dir, 'pki');
    const sans = podSANs(namespace, API_SERVICE);
    await writeControlPlanePki(pki, {
      clusterName: OWNER,
      serviceCIDR: '10.96.0.0/12',
      advertiseAddress: '127.0.0.1',
      extraSANs: [clusterIP, ...sans.apiserver],
      etcdSANs: sans.etcd,
    });
    const set = await readSet(pki);
    await storeFiles(core, namespace, FILE_SOURCES.pki.name, Object.fromEntries(set!));
    const p = placeInHost({
      id: OWNER,
      namespace,
      serviceCIDR: '10.96.0.0/12',
      apiService: API_SERVICE,
      probePki: pki,
    });
    await storeFiles(
      core,
      namespace,
      FILE_SOURCES.kubeconfigs.name,
      await renderKubeconfigs(pki, p.apiserverURL, OWNER),
    );

    const runtime = runtimeWith(images);
    const specs = [etcdSpec, apiserverSpec, controllerManagerSpec, schedulerSpec].map((build) =>
      build(p, IMAGE_PROGRAMS),
    );
    // The scheduler's pod holds no key but its own serving key.
    const schedulerKeys = specs[3]!.files!.flatMap((f) => f.keys).filter((k) => k.endsWith('.key'));
    expect(schedulerKeys).toEqual(['scheduler-serving.key']);
    for (const spec of specs) {
      await runtime.ensure(spec);
      await runtime.waitReady(OWNER, spec.name, 180_000);
    }

    // From this machine, through the Service's ClusterIP (kube-proxy's rules on the real node).
    const admin = join(dir, 'admin.conf');
    await writeFile(admin, (await renderKubeconfigs(pki, `https://${clusterIP}:443`, OWNER))['admin.conf']);
    await kubectl(admin, 'create', 'namespace', 'kept');
    await kubectl(admin, 'create', 'configmap', 'kept', '-n', 'kept', '--from-literal=a=1');
    // The controller-manager reaches the API server by its Service's name: it makes the namespace's ServiceAccount.
    await eventually(
      'the default ServiceAccount of a new namespace',
      async () =>
        (
          await kubectl(admin, 'get', 'serviceaccount', 'default', '-n', 'kept', '-o', 'name').catch(() => '')
        ).trim() || undefined,
    );

    // An unchanged spec rolls nothing.
    const uids = async (): Promise<Record<string, (string | undefined)[]>> =>
      Object.fromEntries(
        await Promise.all(
          specs.map(async (s) => [s.name, (await podOf(s.name)).map((x) => x.metadata!.uid)] as const),
        ),
      );
    const apps = hostKubeConfig().makeApiClient(AppsV1Api);
    const versions = async () =>
      [
        ...(await apps.listNamespacedDeployment({ namespace })).items,
        ...(await apps.listNamespacedStatefulSet({ namespace })).items,
      ]
        .map(
          (w) =>
            `${w.metadata!.name}@${w.metadata!.generation}/${w.metadata!.annotations!['kosmos.io/spec-hash']}`,
        )
        .sort();
    const before = await uids();
    const workloadsBefore = await versions();
    for (const spec of specs) await runtime.ensure(spec);
    // No workload's spec changed (its generation and hash): nothing could roll.
    expect(await versions()).toEqual(workloadsBefore);
    expect(await uids()).toEqual(before);
    // A stop and an ensure straight after: a new scheduler, ready (not the one being deleted).
    await runtime.stop(OWNER, 'kube-scheduler');
    expect(await podOf('kube-scheduler')).toEqual([]);
    await runtime.ensure(specs[3]!);
    await runtime.waitReady(OWNER, 'kube-scheduler', 180_000);
    const scheduler = await podOf('kube-scheduler');
    expect(scheduler.map((p) => p.metadata!.uid)).not.toEqual(before['kube-scheduler']);
    const listed = await runtime.list(OWNER);
    expect(listed.map((c) => [c.name, c.running]).sort()).toEqual(specs.map((s) => [s.name, true]).sort());

    // Kill the API server's pod and etcd's: they come back, with the data and the same kubeconfig.
    for (const name of ['kube-apiserver', 'etcd'] as const)
      for (const pod of await podOf(name))
        await core.deleteNamespacedPod({ name: pod.metadata!.name!, namespace, gracePeriodSeconds: 0 });
    for (const name of ['etcd', 'kube-apiserver'] as const) {
      await eventually(`a new ${name} pod`, async () => {
        const now = await podOf(name);
        return now.length === 1 && now[0]!.metadata!.uid !== before[name]![0] ? true : undefined;
      });
      await runtime.waitReady(OWNER, name, 180_000);
    }
    const kept = await eventually('the ConfigMap through the restarted API server', async () =>
      kubectl(admin, 'get', 'configmap', 'kept', '-n', 'kept', '-o', 'jsonpath={.data.a}').catch(
        () => undefined,
      ),
    );
    expect(kept).toBe('1');

    await runtime.remove(OWNER);
    const selector = `${CONTROL_PLANE_LABEL}=${ownerLabel(OWNER)}`;
    expect((await core.listNamespacedPod({ namespace, labelSelector: selector })).items).toEqual([]);
    expect((await core.listNamespacedService({ namespace })).items).toEqual([]);
    expect((await core.listNamespacedPersistentVolumeClaim({ namespace })).items).toEqual([]);
    expect((await apps.listNamespacedDeployment({ namespace })).items).toEqual([]);
    expect((await apps.listNamespacedStatefulSet({ namespace })).items).toEqual([]);
    expect(await runtime.list(OWNER)).toEqual([]);
  });

  it('says which image it could not pull, without waiting out the timeout', async () => {
    const owner = 'kruntime-bad-image';
    const p = placeInHost({
      id: owner,
      namespace,
      serviceCIDR: '10.96.0.0/12',
      apiService: API_SERVICE,
      probePki: dir,
    });
    const runtime = runtimeWith({ 'kube-scheduler': 'registry.k8s.io/kube-scheduler:v0.0.0-missing' });
    const spec = schedulerSpec(p, IMAGE_PROGRAMS);
    await runtime.ensure(spec);
    const t0 = Date.now();
    const err = await runtime.waitReady(owner, 'kube-scheduler', 120_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ComponentStartError);
    expect(String(err)).toMatch(/kube-scheduler:v0\.0\.0-missing/);
    expect(Date.now() - t0).toBeLessThan(90_000);
    await runtime.remove(owner);
    expect(await runtime.list(owner)).toEqual([]);
  });
});
