/**
 * The kubernetes runtime (ADR 14): each component of a control plane is a workload in the host
 * cluster, in the tenant's host namespace: etcd a StatefulSet with a claim for its data, the others
 * Deployments. Files come from the Secrets the activities keep (a component mounts the keys it
 * reads and no other), addresses from Services. The host's controllers keep the pods running;
 * no worker is needed between steps, and any worker can run any step.
 */
import {
  AppsV1Api,
  CoreV1Api,
  type CoreV1Event,
  type KubeConfig,
  type V1Deployment,
  type V1Pod,
  type V1Service,
  type V1StatefulSet,
} from '@kubernetes/client-node';
import { isNotFound, errorText } from '../api/kubeClient.js';
import { prober } from './probe.js';
import {
  ComponentExitedError,
  ReadinessTimeoutError,
  type ComponentName,
  type ComponentSpec,
  type ComponentStatus,
  type ControlPlaneRuntime,
  type HttpsProbe,
} from './types.js';
import {
  COMPONENT_LABEL,
  CONTROL_PLANE_LABEL,
  ComponentStartError,
  HASH_ANNOTATION,
  MANAGED_BY,
  OWNER_ANNOTATION,
  STATEFUL,
  ownerLabel,
  renderWorkload,
  selectorOf,
  selectorText,
  type WorkloadOptions,
} from './podWorkload.js';

export interface KubernetesRuntimeOptions extends WorkloadOptions {
  kubeConfig: KubeConfig;
  /** How often waitReady looks at the pods. */
  pollMs?: number;
}

export class KubernetesRuntime implements ControlPlaneRuntime {
  private readonly apps: AppsV1Api;
  private readonly core: CoreV1Api;
  private readonly pollMs: number;
  /** Where each component's workload was found or made: its namespace is asked alone. */
  private readonly namespaces = new Map<string, string>();
  /** The component's own probe, as the last ensure here gave it (with this worker's file paths). */
  private readonly probes = new Map<string, HttpsProbe>();

  constructor(private readonly opts: KubernetesRuntimeOptions) {
    this.apps = opts.kubeConfig.makeApiClient(AppsV1Api);
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.pollMs = opts.pollMs ?? 500;
  }

  async ensure(spec: ComponentSpec): Promise<ComponentStatus> {
    const namespace = spec.namespace;
    if (!namespace) throw new Error(`${spec.name} of ${spec.owner} has no namespace: not a spec for pods`);
    const workload = renderWorkload(spec, namespace, this.opts);
    if (spec.service) await this.ensureService(spec, namespace);
    const stateful = STATEFUL.has(spec.name);
    const read = () =>
      (stateful
        ? this.apps.readNamespacedStatefulSet({ name: spec.name, namespace })
        : this.apps.readNamespacedDeployment({ name: spec.name, namespace })
      ).catch((e: unknown) => {
        if (isNotFound(e)) return undefined;
        throw e;
      });
    let current = await read();
    // One being deleted (a stop that was cut short) is waited out, then made anew.
    const deadline = Date.now() + 110_000;
    while (current?.metadata?.deletionTimestamp) {
      if (Date.now() >= deadline) throw new Error(`${spec.name} of ${spec.owner} is still being deleted`);
      await new Promise((r) => setTimeout(r, Math.max(this.pollMs, 100)));
      current = await read();
    }
    const hash = workload.metadata!.annotations![HASH_ANNOTATION];
    if (!current) {
      await (stateful
        ? this.apps.createNamespacedStatefulSet({ namespace, body: workload as V1StatefulSet })
        : this.apps.createNamespacedDeployment({ namespace, body: workload }));
    } else if (current.metadata?.annotations?.[HASH_ANNOTATION] !== hash) {
      // A changed spec (or operator version that renders it differently) rolls this component.
      const body = {
        ...workload,
        metadata: { ...workload.metadata, resourceVersion: current.metadata?.resourceVersion },
      };
      if (stateful) {
        // A claim template cannot change: the one the data lives on stays.
        const claims = (current as V1StatefulSet).spec?.volumeClaimTemplates;
        const wanted = (body as V1StatefulSet).spec!.volumeClaimTemplates;
        if (!!claims !== !!wanted)
          throw new ComponentStartError(
            `${spec.name} of ${spec.owner} keeps its data ${claims ? 'on a claim' : 'in an emptyDir'}: ` +
              'the storage of an existing control plane cannot change',
          );
        if (claims) (body as V1StatefulSet).spec!.volumeClaimTemplates = claims;
        // Other fields a StatefulSet cannot change keep what it was made with (an older version's).
        const was = (current as V1StatefulSet).spec;
        if (was?.podManagementPolicy)
          (body as V1StatefulSet).spec!.podManagementPolicy = was.podManagementPolicy;
        if (was?.serviceName) (body as V1StatefulSet).spec!.serviceName = was.serviceName;
        await this.apps.replaceNamespacedStatefulSet({
          name: spec.name,
          namespace,
          body: body as V1StatefulSet,
        });
      } else {
        await this.apps.replaceNamespacedDeployment({
          name: spec.name,
          namespace,
          body: body as V1Deployment,
        });
      }
    }
    this.namespaces.set(`${spec.owner}/${spec.name}`, namespace);
    if (spec.probe) this.probes.set(`${spec.owner}/${spec.name}`, spec.probe);
    else this.probes.delete(`${spec.owner}/${spec.name}`);
    return {
      owner: spec.owner,
      name: spec.name,
      running:
        (current?.status?.readyReplicas ?? 0) > 0 &&
        current?.metadata?.annotations?.[HASH_ANNOTATION] === hash,
      restarts: 0,
    };
  }

  /**
   * The component's Service: made, or adopted (an existing one keeps its ClusterIP, which
   * certificates and kubeconfigs may name) with its selector and ports set.
   */
  private async ensureService(spec: ComponentSpec, namespace: string): Promise<void> {
    const svc = spec.service!;
    const ports = Object.entries(spec.ports ?? {});
    if (ports.length === 0) throw new Error(`${spec.name} has a Service but no port`);
    // The port the Service carries: the one of `svc.port`'s number, else the first.
    const first = ports.find(([, port]) => port === svc.port) ?? ports[0];
    const body: V1Service = {
      metadata: { name: svc.name, namespace, labels: { ...MANAGED_BY, ...selectorOf(spec.owner) } },
      spec: {
        selector: selectorOf(spec.owner, spec.name),
        ...(svc.headless
          ? {
              clusterIP: 'None',
              // Its own peers and clients find a pod that is not ready yet (etcd before quorum).
              publishNotReadyAddresses: true,
              ports: ports.map(([name, port]) => ({
                name: name.slice(0, 15),
                port,
                targetPort: port,
                protocol: 'TCP',
              })),
            }
          : {
              ports: [
                ...(svc.udp ? ['TCP', 'UDP'] : ['TCP']).map((protocol) => ({
                  name: (protocol === 'TCP' ? first![0] : `${first![0]}-udp`).slice(0, 15),
                  port: svc.port ?? first![1],
                  targetPort: first![1],
                  protocol,
                })),
                ...(svc.direct && (svc.port ?? first![1]) !== first![1]
                  ? [
                      {
                        name: `${first![0]}-direct`.slice(0, 15),
                        port: first![1],
                        targetPort: first![1],
                        protocol: 'TCP',
                      },
                    ]
                  : []),
              ],
            }),
      },
    };
    const current = await this.core
      .readNamespacedService({ name: svc.name, namespace })
      .catch((e: unknown) => {
        if (isNotFound(e)) return undefined;
        throw e;
      });
    if (!current) {
      await this.core.createNamespacedService({ namespace, body });
      return;
    }
    if (svc.headless && current.spec?.clusterIP !== 'None') {
      // A ClusterIP cannot become None: made again (nothing names a headless Service's address).
      await this.core.deleteNamespacedService({ name: svc.name, namespace });
      await this.core.createNamespacedService({ namespace, body });
      return;
    }
    const same =
      JSON.stringify(current.spec?.selector ?? {}) === JSON.stringify(body.spec!.selector) &&
      (!svc.headless || current.spec?.publishNotReadyAddresses === true) &&
      JSON.stringify((current.spec?.ports ?? []).map((p) => [p.name, p.port, p.targetPort, p.protocol])) ===
        JSON.stringify(body.spec!.ports!.map((p) => [p.name, p.port, p.targetPort, p.protocol])) &&
      current.metadata?.labels?.[CONTROL_PLANE_LABEL] === ownerLabel(spec.owner);
    if (same) return;
    await this.core.replaceNamespacedService({
      name: svc.name,
      namespace,
      body: {
        ...current,
        metadata: { ...current.metadata, labels: { ...current.metadata?.labels, ...body.metadata!.labels } },
        spec: {
          ...current.spec,
          selector: body.spec!.selector!,
          // A NodePort it was given stays its own.
          ports: body.spec!.ports!.map((p) => {
            const nodePort = current.spec?.ports?.find((c) => c.name === p.name)?.nodePort;
            return nodePort ? { ...p, nodePort } : p;
          }),
          ...(svc.headless ? { publishNotReadyAddresses: true } : {}),
        },
      },
    });
  }

  /** The workload of a component, wherever its namespace is. */
  private async find(owner: string, name: ComponentName): Promise<V1Deployment | V1StatefulSet | undefined> {
    const labelSelector = selectorText(selectorOf(owner, name));
    const namespace = this.namespaces.get(`${owner}/${name}`);
    const stateful = STATEFUL.has(name);
    const list = namespace
      ? await (stateful
          ? this.apps.listNamespacedStatefulSet({ namespace, labelSelector })
          : this.apps.listNamespacedDeployment({ namespace, labelSelector }))
      : await (stateful
          ? this.apps.listStatefulSetForAllNamespaces({ labelSelector })
          : this.apps.listDeploymentForAllNamespaces({ labelSelector }));
    const found = list.items[0];
    if (found) this.namespaces.set(`${owner}/${name}`, found.metadata!.namespace!);
    return found;
  }

  async waitReady(owner: string, name: ComponentName, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no pod yet';
    let probe: { spec: HttpsProbe; at: string; check: () => Promise<number> } | undefined;
    for (;;) {
      const w = await this.find(owner, name);
      if (!w) throw new Error(`${name} of ${owner} is not deployed`);
      const namespace = w.metadata!.namespace!;
      // Pods of the workload's current template alone: an old one that fails is what a new spec
      // may be meant to fix.
      const revision = await this.currentRevision(w, STATEFUL.has(name));
      const pods = (
        await this.core.listNamespacedPod({ namespace, labelSelector: selectorText(selectorOf(owner, name)) })
      ).items.filter(
        (p) =>
          !p.metadata?.deletionTimestamp &&
          revision !== undefined &&
          p.metadata?.labels?.[revision.label] === revision.value,
      );
      const stuck = stuckReason(name, pods);
      if (stuck === 'crashing') {
        const c = pods.flatMap((p) => p.status?.containerStatuses ?? []).find((x) => x.restartCount >= 2);
        throw new ComponentExitedError(
          owner,
          name,
          c?.lastState?.terminated?.exitCode ?? null,
          await this.tailOf(namespace, pods),
        );
      }
      if (stuck) throw new ComponentStartError(stuck);
      const ready = rolledOut(w, STATEFUL.has(name)) ? pods.find(isReady) : undefined;
      if (!ready) last = whyNotReady(w, pods);
      else {
        // The probe this worker's ensure gave (its files are this worker's copy of the set); a
        // worker that never ensured the component goes by the pod's readiness alone.
        const spec = this.probes.get(`${owner}/${name}`);
        if (!spec) return;
        const at = ready.status!.podIP!;
        if (probe?.spec !== spec || probe.at !== at) probe = { spec, at, check: prober(spec, 2000, at) };
        try {
          const code = await probe.check();
          if (code === 200) return;
          last = `HTTP ${code} from ${ready.metadata!.name}`;
        } catch (e) {
          last = `${ready.metadata!.name}: ${errorText(e)}`;
        }
      }
      if (Date.now() >= deadline)
        throw new ReadinessTimeoutError(owner, name, timeoutMs, await this.withEvents(namespace, pods, last));
      await new Promise((r) => setTimeout(r, this.pollMs));
    }
  }

  /**
   * The label a pod of the workload's current template has, once its controller has seen the
   * template (before, no pod counts): a StatefulSet's update revision; a Deployment's newest
   * ReplicaSet's template hash.
   */
  private async currentRevision(
    w: V1Deployment | V1StatefulSet,
    stateful: boolean,
  ): Promise<{ label: string; value: string } | undefined> {
    if ((w.status?.observedGeneration ?? 0) < (w.metadata?.generation ?? 0)) return undefined;
    if (stateful) {
      const rev = (w as V1StatefulSet).status?.updateRevision;
      return rev ? { label: 'controller-revision-hash', value: rev } : undefined;
    }
    // The Deployment's own ReplicaSet of the highest revision: the controller writes it before
    // it says it has seen the generation.
    const sets = await this.apps.listNamespacedReplicaSet({
      namespace: w.metadata!.namespace!,
      labelSelector: selectorText(w.spec!.selector.matchLabels ?? {}),
    });
    const revisionOf = (rs: (typeof sets.items)[number]) =>
      Number(rs.metadata?.annotations?.['deployment.kubernetes.io/revision'] ?? 0);
    const newest = sets.items
      .filter((rs) => rs.metadata?.ownerReferences?.some((o) => o.uid === w.metadata?.uid))
      .sort((a, b) => revisionOf(a) - revisionOf(b))
      .at(-1);
    const hash = newest?.metadata?.labels?.['pod-template-hash'];
    return hash ? { label: 'pod-template-hash', value: hash } : undefined;
  }

  /** What the last warning event of a pod not ready says (a volume that cannot be mounted), if any. */
  private async withEvents(namespace: string, pods: V1Pod[], last: string): Promise<string> {
    const pod = pods.find((p) => !isReady(p));
    if (!pod) return last;
    const events = await this.core
      .listNamespacedEvent({
        namespace,
        fieldSelector: `involvedObject.uid=${pod.metadata!.uid},type=Warning`,
      })
      .catch(() => undefined);
    const at = (e: CoreV1Event) => new Date(e.lastTimestamp ?? e.eventTime ?? 0).getTime();
    const warning = events?.items.sort((a, b) => at(a) - at(b)).at(-1);
    return warning ? `${last}; ${warning.reason}: ${warning.message}` : last;
  }

  private async tailOf(namespace: string, pods: V1Pod[], lines = 40): Promise<string> {
    const pod =
      pods.find((p) => (p.status?.containerStatuses ?? []).some((c) => c.restartCount > 0)) ?? pods[0];
    if (!pod) return '';
    const c = pod.status?.containerStatuses?.[0];
    const previous = !!c && !c.state?.running && c.restartCount > 0;
    return this.core
      .readNamespacedPodLog({ name: pod.metadata!.name!, namespace, tailLines: lines, previous })
      .catch(() => '');
  }

  async stop(owner: string, name: ComponentName): Promise<void> {
    const w = await this.find(owner, name);
    if (!w) return;
    const namespace = w.metadata!.namespace!;
    const gone = (e: unknown) => {
      if (!isNotFound(e)) throw e;
    };
    await (
      STATEFUL.has(name)
        ? this.apps.deleteNamespacedStatefulSet({
            name: w.metadata!.name!,
            namespace,
            propagationPolicy: 'Foreground',
          })
        : this.apps.deleteNamespacedDeployment({
            name: w.metadata!.name!,
            namespace,
            propagationPolicy: 'Foreground',
          })
    ).catch(gone);
    // Within the undo steps' two minutes, pods and then the workload itself: the workload goes
    // after its pods, and an ensure right after a stop must make a new one.
    const deadline = Date.now() + 110_000;
    await this.untilNoPods(namespace, selectorOf(owner, name), 100_000);
    while (await this.find(owner, name)) {
      if (Date.now() >= deadline) throw new Error(`${name} of ${owner} is still there after its deletion`);
      await new Promise((r) => setTimeout(r, Math.max(this.pollMs, 100)));
    }
  }

  async remove(owner: string): Promise<void> {
    for (const key of [...this.namespaces.keys(), ...this.probes.keys()])
      if (key.startsWith(`${owner}/`)) {
        this.namespaces.delete(key);
        this.probes.delete(key);
      }
    const labelSelector = selectorText(selectorOf(owner));
    const [deployments, statefulSets, services] = await Promise.all([
      this.apps.listDeploymentForAllNamespaces({ labelSelector }),
      this.apps.listStatefulSetForAllNamespaces({ labelSelector }),
      this.core.listServiceForAllNamespaces({ labelSelector }),
    ]);
    const namespaces = new Set(
      [...deployments.items, ...statefulSets.items, ...services.items].map((o) => o.metadata!.namespace!),
    );
    const gone = (e: unknown) => {
      if (!isNotFound(e)) throw e;
    };
    // Within the undo steps' two minutes, all namespaces together.
    const deadline = Date.now() + 100_000;
    for (const namespace of namespaces) {
      await Promise.all([
        this.apps.deleteCollectionNamespacedDeployment({
          namespace,
          labelSelector,
          propagationPolicy: 'Foreground',
        }),
        this.apps.deleteCollectionNamespacedStatefulSet({
          namespace,
          labelSelector,
          propagationPolicy: 'Foreground',
        }),
      ]).catch(gone);
      for (const s of services.items.filter((s) => s.metadata!.namespace === namespace))
        await this.core.deleteNamespacedService({ name: s.metadata!.name!, namespace }).catch(gone);
      await this.untilNoPods(namespace, selectorOf(owner), Math.max(deadline - Date.now(), 1_000));
      // After the pods: a claim in use is only marked for deletion.
      await this.core
        .deleteCollectionNamespacedPersistentVolumeClaim({ namespace, labelSelector })
        .catch(gone);
    }
    // Claims of a StatefulSet already deleted (a remove that stopped halfway) are found by label too.
    const claims = await this.core.listPersistentVolumeClaimForAllNamespaces({ labelSelector });
    for (const c of claims.items)
      await this.core
        .deleteNamespacedPersistentVolumeClaim({ name: c.metadata!.name!, namespace: c.metadata!.namespace! })
        .catch(gone);
    // A deleted claim stays until the controller-manager lifts its protection: gone when this returns.
    for (;;) {
      const left = await this.core.listPersistentVolumeClaimForAllNamespaces({ labelSelector });
      if (left.items.length === 0) return;
      if (Date.now() >= deadline)
        throw new Error(`claims still there: ${left.items.map((c) => c.metadata?.name).join(', ')}`);
      await new Promise((r) => setTimeout(r, this.pollMs));
    }
  }

  private async untilNoPods(
    namespace: string,
    labels: Record<string, string>,
    timeoutMs = 120_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const labelSelector = selectorText(labels);
    for (;;) {
      const pods = await this.core.listNamespacedPod({ namespace, labelSelector });
      if (pods.items.length === 0) return;
      if (Date.now() >= deadline)
        throw new Error(
          `pods still there after ${timeoutMs / 1000}s: ${pods.items.map((p) => p.metadata?.name).join(', ')}`,
        );
      await new Promise((r) => setTimeout(r, this.pollMs));
    }
  }

  async list(owner?: string): Promise<ComponentStatus[]> {
    const labelSelector = owner ? selectorText(selectorOf(owner)) : CONTROL_PLANE_LABEL;
    const [deployments, statefulSets, pods] = await Promise.all([
      this.apps.listDeploymentForAllNamespaces({ labelSelector }),
      this.apps.listStatefulSetForAllNamespaces({ labelSelector }),
      this.core.listPodForAllNamespaces({ labelSelector }),
    ]);
    return [...statefulSets.items, ...deployments.items].map((w) => {
      const o = w.metadata?.annotations?.[OWNER_ANNOTATION] ?? '';
      const name = w.metadata!.labels![COMPONENT_LABEL] as ComponentName;
      const own = pods.items.filter(
        (p) =>
          p.metadata?.labels?.[COMPONENT_LABEL] === name && p.metadata?.annotations?.[OWNER_ANNOTATION] === o,
      );
      return {
        owner: o,
        name,
        running: (w.status?.readyReplicas ?? 0) > 0,
        restarts: own.reduce(
          (n, p) => n + (p.status?.containerStatuses ?? []).reduce((m, c) => m + c.restartCount, 0),
          0,
        ),
      };
    });
  }

  /** The host's controllers kept the pods running: nothing to bring back. */
  async resume(): Promise<ComponentStatus[]> {
    return this.list();
  }

  /** The pods keep running without a worker. */
  async shutdown(): Promise<void> {}

  async logTail(owner: string, name: ComponentName, lines = 40): Promise<string> {
    const w = await this.find(owner, name);
    if (!w) return '';
    const namespace = w.metadata!.namespace!;
    const pods = await this.core.listNamespacedPod({
      namespace,
      labelSelector: selectorText(selectorOf(owner, name)),
    });
    return this.tailOf(namespace, pods.items, lines);
  }
}

const isReady = (p: V1Pod): boolean =>
  !!p.status?.podIP && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/**
 * Why a component cannot start, when waiting longer would not help: an image that does not
 * exist, a container that cannot be made, one that keeps crashing (`crashing`). A pull that
 * failed for another reason (a registry briefly away) is waited on.
 */
export function stuckReason(name: ComponentName, pods: V1Pod[]): string | undefined {
  for (const pod of pods)
    for (const c of pod.status?.containerStatuses ?? []) {
      const reason = c.state?.waiting?.reason;
      const message = c.state?.waiting?.message ?? '';
      if (reason === 'InvalidImageName') return `${name}: ${reason}: ${message || c.image}`;
      if (
        (reason === 'ErrImagePull' || reason === 'ImagePullBackOff') &&
        /not found|manifest unknown/i.test(message)
      )
        return `${name}: image ${c.image} not found: ${message}`;
      if (reason === 'CreateContainerConfigError') return `${name}: ${reason}: ${message}`;
      // Only what a retry cannot mend: a loaded node's timeouts and name reservations pass.
      if (
        reason === 'CreateContainerError' &&
        /exec: "[^"]*": (executable file not found|stat [^:]*: no such file or directory)/i.test(message)
      )
        return `${name}: ${reason}: ${message}`;
      if (!c.ready && c.restartCount >= 2 && reason === 'CrashLoopBackOff') return 'crashing';
    }
  return undefined;
}

/** Every replica runs the workload's current template (as `kubectl rollout status` decides). */
function rolledOut(w: V1Deployment | V1StatefulSet, stateful: boolean): boolean {
  const s = w.status;
  if (!s || (s.observedGeneration ?? 0) < (w.metadata?.generation ?? 0)) return false;
  const want = w.spec?.replicas ?? 1;
  if (stateful) {
    const st = s as V1StatefulSet['status'];
    return (
      (st?.updatedReplicas ?? 0) >= want &&
      st?.currentRevision === st?.updateRevision &&
      (st?.readyReplicas ?? 0) >= want
    );
  }
  const d = s as V1Deployment['status'];
  return (
    (d?.updatedReplicas ?? 0) >= want && (d?.replicas ?? 0) <= want && (d?.availableReplicas ?? 0) >= want
  );
}

/** What a user would want to know about a component that is not ready yet. */
function whyNotReady(w: V1Deployment | V1StatefulSet, pods: V1Pod[]): string {
  if (pods.length === 0) return `no pod of ${w.kind ?? 'the workload'} ${w.metadata?.name} yet`;
  for (const p of pods) {
    const unscheduled = p.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
    if (unscheduled) return `${p.metadata?.name} not scheduled: ${unscheduled.message ?? unscheduled.reason}`;
    const c = p.status?.containerStatuses?.[0];
    if (c?.state?.waiting) return `${p.metadata?.name}: ${c.state.waiting.reason ?? 'waiting'}`;
    if (c && !c.ready) return `${p.metadata?.name}: not ready (restarts: ${c.restartCount})`;
  }
  return `${w.metadata?.name}: rolling out`;
}
