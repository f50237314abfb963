/**
 * A control-plane component as a workload of the host cluster (ADR 14): the Deployment or
 * StatefulSet a spec becomes, the labels that find it again, the Secrets its files come from.
 * Pure rendering and the few writes of files; the kubernetes runtime (kubernetesRuntime.ts)
 * drives them.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type {
  CoreV1Api,
  V1Container,
  V1Deployment,
  V1ObjectMeta,
  V1PodTemplateSpec,
  V1Probe,
  V1ResourceRequirements,
  V1StatefulSet,
  V1Toleration,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import { isNotFound, statusCode } from '../api/kubeClient.js';
import { repoRoot } from './binaries.js';
import type { ComponentName, ComponentSpec, FileSet } from './types.js';

/** Where each source of files lives in the component's namespace. */
export const FILE_SOURCES: Readonly<
  Record<FileSet['source'], { kind: 'Secret' | 'ConfigMap'; name: string }>
> = {
  pki: { kind: 'Secret', name: 'kosmos-vc-pki' },
  kubeconfigs: { kind: 'Secret', name: 'kosmos-vc-kubeconfigs' },
  'audit-policy': { kind: 'ConfigMap', name: 'kosmos-vc-audit-policy' },
  clustertree: { kind: 'Secret', name: 'kosmos-vc-clustertree' },
  coredns: { kind: 'Secret', name: 'kosmos-vc-coredns' },
};

/** Secret and ConfigMap keys allow no `/`: `etcd/ca.crt` is kept as `etcd__ca.crt`. */
export const fileKey = (path: string): string => path.replaceAll('/', '__');

export const CONTROL_PLANE_LABEL = 'kosmos.io/control-plane';
export const COMPONENT_LABEL = 'app.kubernetes.io/name';
export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'kosmos-vc' };
export const OWNER_ANNOTATION = 'kosmos.io/owner';
export const HASH_ANNOTATION = 'kosmos.io/spec-hash';

/** A label value for an owner (a tenant id can be longer than a label value may be). */
export const ownerLabel = (owner: string): string =>
  createHash('sha256').update(owner).digest('hex').slice(0, 20);

export const selectorOf = (owner: string, name?: ComponentName): Record<string, string> => ({
  [CONTROL_PLANE_LABEL]: ownerLabel(owner),
  ...(name ? { [COMPONENT_LABEL]: name } : {}),
});
export const selectorText = (labels: Record<string, string>): string =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

/**
 * What each component asks of the host, from ADR 12's measurements of an idle tenant; memory
 * limits leave room for load. No CPU limits: throttling a control plane only makes it slower.
 */
export const DEFAULT_RESOURCES: Readonly<Partial<Record<ComponentName, V1ResourceRequirements>>> = {
  etcd: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '512Mi' } },
  'kube-apiserver': { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } },
  'kube-controller-manager': { requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '512Mi' } },
  'kube-scheduler': { requests: { cpu: '25m', memory: '48Mi' }, limits: { memory: '256Mi' } },
  // Node.js: ~115 MiB idle (ADR 12), its heap growing with the objects it mirrors.
  clustertree: { requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '1Gi' } },
  coredns: { requests: { cpu: '25m', memory: '48Mi' }, limits: { memory: '256Mi' } },
};

/** What a tenant runs as pods (ADR 14), each from its own image. */
export const POD_COMPONENTS = [
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'clustertree',
  'coredns',
] as const satisfies readonly ComponentName[];

/**
 * Rolled one pod after the other (two may serve at once: the new one is ready before the old one
 * goes); the rest are replaced (no leader election: never two at once).
 */
export const ROLLING: ReadonlySet<ComponentName> = new Set(['kube-apiserver', 'coredns']);
/** Kept in a StatefulSet with a claim for what it writes. */
export const STATEFUL: ReadonlySet<ComponentName> = new Set(['etcd']);

/** How a component's workload is made: its image, etcd's storage, where and how large its pods are. */
export interface WorkloadOptions {
  /** The image of each component (its program is the spec's command inside it). */
  images: Partial<Record<ComponentName, string>>;
  /** etcd's data: a claim of `storageClass` (the cluster's default when unset), or an emptyDir. */
  etcdStorage?: { storageClass?: string; size?: string } | { emptyDir: true };
  resources?: Partial<Record<ComponentName, V1ResourceRequirements>>;
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
}

/** Thrown when a component's pods cannot start at all (no image, a missing Secret key). */
export class ComponentStartError extends Error {
  override readonly name = 'ComponentStartError';
}

/** The workload of a spec, with the hash of everything it says in an annotation. */
export function renderWorkload(
  spec: ComponentSpec,
  namespace: string,
  opts: WorkloadOptions,
): V1Deployment | V1StatefulSet {
  const image = opts.images[spec.name];
  if (!image) throw new ComponentStartError(`no image configured for ${spec.name}`);
  const labels = { ...MANAGED_BY, ...selectorOf(spec.owner, spec.name) };
  const volumes: V1Volume[] = [{ name: 'tmp', emptyDir: {} }];
  const mounts: V1VolumeMount[] = [{ name: 'tmp', mountPath: '/tmp' }];
  for (const f of spec.files ?? []) {
    const source = FILE_SOURCES[f.source];
    const items = f.keys.map((k) => ({ key: fileKey(k), path: k }));
    const name = `files-${f.source}`;
    volumes.push(
      source.kind === 'Secret'
        ? { name, secret: { secretName: source.name, items, defaultMode: 0o440 } }
        : { name, configMap: { name: source.name, items, defaultMode: 0o440 } },
    );
    mounts.push({ name, mountPath: f.path, readOnly: true });
  }
  const stateful = STATEFUL.has(spec.name);
  const storage = opts.etcdStorage ?? {};
  const claim = stateful && !('emptyDir' in storage);
  (spec.writes ?? []).forEach((dir, i) => {
    // The directory's parent is the volume: the component makes the directory itself, with its
    // own mode (etcd insists on 0700), and a file system's lost+found stays out of it.
    const name = i === 0 && claim ? 'data' : `writes-${i}`;
    if (name !== 'data') volumes.push({ name, emptyDir: {} });
    mounts.push({ name, mountPath: dirname(dir) });
  });
  const health = spec.health;
  const probe = (
    path: string,
    periodSeconds: number,
    failureThreshold: number,
    port = health!.port,
  ): V1Probe => ({
    httpGet: { scheme: health!.scheme, port, path },
    periodSeconds,
    timeoutSeconds: 5,
    failureThreshold,
  });
  const container: V1Container = {
    name: spec.name,
    image,
    command: [spec.command],
    args: [...spec.args],
    env: [
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      ...Object.entries(spec.env ?? {}).map(([name, value]) => ({ name, value })),
    ],
    ports: Object.entries(spec.ports ?? {}).map(([name, containerPort]) => ({
      name: name.slice(0, 15),
      containerPort,
      protocol: 'TCP',
    })),
    resources: opts.resources?.[spec.name] ?? DEFAULT_RESOURCES[spec.name] ?? {},
    volumeMounts: mounts,
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    },
    ...(health
      ? {
          // Up to a minute to start, checked every second: the kubelet's probe periods are most of
          // a pod's time to ready (ADR 14). Then restarted after 30 s of failing its liveness
          // check; readiness every 2 s (a probe per second of every component of every tenant
          // costs the node a TLS handshake each).
          startupProbe: probe(health.live, 1, 60, health.livePort),
          livenessProbe: probe(health.live, 10, 3, health.livePort),
          readinessProbe: probe(health.ready, 2, 3),
        }
      : {}),
  };
  const template: V1PodTemplateSpec = {
    metadata: { labels, annotations: { [OWNER_ANNOTATION]: spec.owner } },
    spec: {
      containers: [container],
      volumes,
      // No credential of the host unless the spec names its service account (clusterTree's).
      ...(spec.serviceAccount
        ? { serviceAccountName: spec.serviceAccount, automountServiceAccountToken: true }
        : { automountServiceAccountToken: false }),
      enableServiceLinks: false,
      // Numeric ids: the images have no user database. The group reads the mounted files.
      securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532 },
      ...(opts.nodeSelector ? { nodeSelector: opts.nodeSelector } : {}),
      ...(opts.tolerations || spec.tolerates
        ? {
            tolerations: [
              ...(opts.tolerations ?? []),
              ...(spec.tolerates
                ? [{ ...spec.tolerates, operator: 'Equal', effect: 'NoSchedule' } satisfies V1Toleration]
                : []),
            ],
          }
        : {}),
    },
  };
  const metadata: V1ObjectMeta = {
    name: spec.name,
    namespace,
    labels,
    annotations: {
      [OWNER_ANNOTATION]: spec.owner,
    },
  };
  const selector = { matchLabels: selectorOf(spec.owner, spec.name) };
  let workload: V1Deployment | V1StatefulSet;
  if (stateful) {
    const s = storage as { storageClass?: string; size?: string };
    workload = {
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata,
      spec: {
        replicas: 1,
        serviceName: spec.service?.name ?? spec.name,
        // A pod that is not ready does not hold back its replacement (OrderedReady would: a fix
        // of a broken spec could then never roll out).
        podManagementPolicy: 'Parallel',
        selector,
        template,
        ...(claim
          ? {
              volumeClaimTemplates: [
                {
                  metadata: { name: 'data', labels },
                  spec: {
                    accessModes: ['ReadWriteOnce'],
                    ...(s.storageClass ? { storageClassName: s.storageClass } : {}),
                    resources: { requests: { storage: s.size ?? '1Gi' } },
                  },
                },
              ],
            }
          : {}),
      },
    };
  } else {
    workload = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata,
      spec: {
        replicas: 1,
        selector,
        template,
        strategy: ROLLING.has(spec.name) ? { type: 'RollingUpdate' } : { type: 'Recreate' },
      },
    };
  }
  const hash = createHash('sha256').update(JSON.stringify(workload)).digest('hex').slice(0, 32);
  workload.metadata!.annotations![HASH_ANNOTATION] = hash;
  return workload;
}

/** Writes a Secret of files (keys as fileKey), labelled as the runtime's; replaced when it differs. */
export async function storeFiles(
  core: CoreV1Api,
  namespace: string,
  name: string,
  files: Readonly<Record<string, string>>,
  labels: Readonly<Record<string, string>> = MANAGED_BY,
): Promise<void> {
  const data = Object.fromEntries(
    Object.entries(files).map(([path, text]) => [
      fileKey(path),
      Buffer.from(text, 'utf8').toString('base64'),
    ]),
  );
  const current = await core.readNamespacedSecret({ name, namespace }).catch((e: unknown) => {
    if (isNotFound(e)) return undefined;
    throw e;
  });
  const body = { metadata: { name, namespace, labels: { ...labels } }, type: 'Opaque', data };
  if (!current) {
    await core.createNamespacedSecret({ namespace, body }).catch((e: unknown) => {
      if (statusCode(e) !== 409) throw e;
      return storeFiles(core, namespace, name, files, labels);
    });
    return;
  }
  const sorted = (d: Record<string, string>) =>
    JSON.stringify(Object.entries(d).sort(([a], [b]) => a.localeCompare(b)));
  if (sorted(current.data ?? {}) === sorted(data)) return;
  await core.replaceNamespacedSecret({
    name,
    namespace,
    body: { ...body, metadata: { ...body.metadata, resourceVersion: current.metadata!.resourceVersion! } },
  });
}

/** The operator's image `npm run image` packed from this checkout (`dist/operator.name`), if it did. */
export async function operatorImage(): Promise<string | undefined> {
  return readFile(join(repoRoot(), 'dist', 'operator.name'), 'utf8').then(
    (t) => t.trim() || undefined,
    () => undefined,
  );
}

/**
 * The images setup built for a control plane and its DNS (`<imagesDir>/<component>.name` holds
 * each one's name) and clusterTree's, the operator's image this checkout packed; without that
 * one, clusterTree has no image and the operator says so.
 */
export async function controlPlaneImages(imagesDir: string): Promise<Partial<Record<ComponentName, string>>> {
  const names = POD_COMPONENTS.filter((c) => c !== 'clustertree');
  const read = (file: string) => readFile(join(imagesDir, file), 'utf8').then((t) => t.trim());
  const operator = await operatorImage();
  return Object.fromEntries([
    ...(await Promise.all(names.map(async (n) => [n, await read(`${n}.name`)]))),
    ...(operator ? [['clustertree', operator]] : []),
  ]) as Partial<Record<ComponentName, string>>;
}
