/**
 * Persistent volumes for the embedded host (ADR 14: a tenant's etcd keeps its data on a PVC):
 * rancher's local-path-provisioner, built by setup from its Go module and run as a host process
 * like kwok, provisions a directory of the real node for each claim of the StorageClass
 * `kosmos-vc-local` (the host's default), through a helper pod on that node that creates it and,
 * when the claim is deleted, removes it. Nothing of this is written by hand: the provisioner is
 * upstream's, configured with its ConfigMap. (It also tries to save each helper pod's log with
 * an in-cluster client, which out of a cluster fails with one error line per helper pod.)
 */
import {
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  StorageV1Api,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { mkdir, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { stringify } from 'yaml';
import { ignoreStatus, reuseConnections } from '../api/kubeClient.js';
import type { Logger } from '../worker/logger.js';
import type { ControlPlaneRuntime } from './types.js';

export const LOCAL_STORAGE_CLASS = 'kosmos-vc-local';
export const STORAGE_NAMESPACE = 'kosmos-vc-storage';
export const LOCAL_PROVISIONER = 'kosmos.io/local-path';
const CONFIG_MAP = 'local-path-config';
const HELPER_ACCOUNT = 'local-path-helper';
const FIELD_MANAGER = 'kosmos-vc';

/** The helper pod the provisioner runs on a node to create or remove a volume's directory. */
function helperPod(image: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'helper-pod' },
    spec: {
      // It runs on the node it is given, promoted to a tenant or not.
      tolerations: [{ operator: 'Exists' }],
      containers: [{ name: 'helper-pod', image, imagePullPolicy: 'IfNotPresent' }],
    },
  });
}

/**
 * The namespace, ServiceAccount, ConfigMap and StorageClass the provisioner works with. The
 * class's volumes go to `node` alone (the real node): a pod of a claim is scheduled there, never
 * to a simulated node, whose helper pod would never finish.
 */
export function storageObjects(helperImage: string, node: string): KubernetesObject[] {
  const labels = { 'app.kubernetes.io/managed-by': 'kosmos-vc' };
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: STORAGE_NAMESPACE, labels } },
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: HELPER_ACCOUNT, namespace: STORAGE_NAMESPACE, labels },
      automountServiceAccountToken: false,
    } as KubernetesObject,
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: CONFIG_MAP, namespace: STORAGE_NAMESPACE, labels },
      data: {
        // $VOL_DIR is the volume's directory on the node, $VOL_MODE its mode (upstream's scripts).
        setup: '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
        teardown: '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
        'helperPod.yaml': helperPod(helperImage),
      },
    } as KubernetesObject,
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: {
        name: LOCAL_STORAGE_CLASS,
        labels,
        annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' },
      },
      provisioner: LOCAL_PROVISIONER,
      // A claim is bound where its first pod is scheduled: the directory is on that node.
      volumeBindingMode: 'WaitForFirstConsumer',
      reclaimPolicy: 'Delete',
      allowedTopologies: [{ matchLabelExpressions: [{ key: 'kubernetes.io/hostname', values: [node] }] }],
    } as KubernetesObject,
  ];
}

/**
 * Applies the objects and starts (or adopts) the provisioner; volumes live under `dir/volumes`
 * on the machine, which is the real node's filesystem.
 */
export async function startLocalStorage(o: {
  runtime: ControlPlaneRuntime;
  owner: string;
  binary: string;
  kubeconfig: string;
  dir: string;
  /** The real node: the only one volumes are made on. */
  node: string;
  helperImage: string;
  logger: Logger;
}): Promise<void> {
  const kc = new KubeConfig();
  kc.loadFromFile(o.kubeconfig);
  reuseConnections(kc);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const apply = (obj: KubernetesObject) =>
    objects.patch(obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
  // The StorageClass last, once its provisioner runs: a default class nobody serves would
  // leave every claim Pending.
  const all = storageObjects(o.helperImage, o.node);
  const storageClass = all.find((obj) => obj.kind === 'StorageClass')!;
  for (const obj of all) if (obj !== storageClass) await apply(obj);
  // The provisioner takes absolute paths only.
  const volumes = resolve(o.dir, 'volumes');
  await mkdir(volumes, { recursive: true, mode: 0o755 });
  const config = resolve(o.dir, 'config.json');
  // Only the real node has a path: a claim for any other node fails at once, and says so.
  await writeFile(config, JSON.stringify({ nodePathMap: [{ node: o.node, paths: [volumes] }] }));
  await o.runtime.ensure({
    owner: o.owner,
    name: 'local-path-provisioner',
    command: o.binary,
    args: [
      'start',
      `--config=${config}`,
      `--provisioner-name=${LOCAL_PROVISIONER}`,
      `--namespace=${STORAGE_NAMESPACE}`,
      `--configmap-name=${CONFIG_MAP}`,
      `--service-account-name=${HELPER_ACCOUNT}`,
      `--helper-image=${o.helperImage}`,
      `--kubeconfig=${o.kubeconfig}`,
    ],
  });
  await apply(storageClass);
  o.logger.info('local storage ready', { storageClass: LOCAL_STORAGE_CLASS, volumes });
}

/** Removes the StorageClass (where its provisioner cannot run), so no claim waits for it. */
export async function removeLocalStorageClass(kubeconfig: string): Promise<void> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  await kc
    .makeApiClient(StorageV1Api)
    .deleteStorageClass({ name: LOCAL_STORAGE_CLASS })
    .catch(ignoreStatus(404));
}
