/**
 * Kubernetes events in: an informer on VirtualClusters feeds one workflow per object.
 *
 * For each object the watcher adds the finalizer, then signal-with-starts the object's
 * workflow with the spec (without spec.kubeconfig, a credential). On deletion it asks the
 * workflow to tear down and removes the finalizer only when the workflow has finished. It keeps
 * nothing a restart would lose: the generation cache only saves redundant signals.
 */
import {
  makeInformer,
  type Informer,
  type KubernetesObject,
  type ObjectCache,
} from '@kubernetes/client-node';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import {
  FINALIZER,
  GROUP,
  PLURAL,
  VERSION,
  VirtualCluster,
  type VirtualClusterRef,
} from '../api/virtualCluster.js';
import { errorText, isConflict, isNotFound, isOwnAbort } from '../api/kubeClient.js';
import type { HostCluster } from '../activities/hostCluster.js';
import type { Logger } from '../worker/logger.js';
import {
  checkCertificatesSignal,
  deleteRequestedSignal,
  searchAttributes,
  specChangedSignal,
  refFromWorkflowId,
  workflowIdFor,
  type DesiredSpec,
  type VirtualClusterWorkflowInput,
} from '../workflows/definitions.js';
import type { virtualClusterWorkflow } from '../workflows/virtualCluster.js';

export interface WatcherOptions {
  host: HostCluster;
  client: Client;
  taskQueue: string;
  logger: Logger;
  searchAttributes: boolean;
  /** Watch only this namespace (default: all). */
  namespace?: string;
  /** A full list every so often catches what a stalled watch missed (default 60 s). */
  relistIntervalMs?: number;
  /** Passed to each workflow: how often to retry promoting missing or taken nodes. */
  promotionRetryMs?: number;
}

const keyOf = (o: { metadata?: { namespace?: string; name?: string } }): string =>
  `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

export class VirtualClusterWatcher {
  private informer: (Informer<KubernetesObject> & ObjectCache<KubernetesObject>) | undefined;
  private relistTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private backoffMs = 1000;
  private stopped = false;
  /** Per-object queue: events for one object are handled one at a time, in order. */
  private readonly queues = new Map<string, Promise<void>>();
  /** uid -> generation last delivered to the workflow. */
  private readonly delivered = new Map<string, number>();
  private readonly deleting = new Set<string>();
  /** uids told to look at their certificates (runs from before renewal), once per watcher. */
  private readonly certificatesChecked = new Set<string>();

  constructor(private readonly opts: WatcherOptions) {}

  /** The status phase of every VirtualCluster in the watcher's cache (undefined: none yet). */
  phases(): (string | undefined)[] {
    return (this.informer?.list() ?? []).map(
      (o: KubernetesObject) => (o as { status?: { phase?: string } }).status?.phase,
    );
  }

  async start(): Promise<void> {
    const ns = this.opts.namespace;
    const path = ns
      ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}`
      : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
    const list = async () => {
      const { items, resourceVersion } = await this.opts.host.listVirtualClusters(ns);
      return {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'VirtualClusterList',
        items: items as KubernetesObject[],
        metadata: { resourceVersion },
      };
    };
    this.informer = makeInformer(this.opts.host.kubeConfig, path, list as never);
    const onEvent = (obj: KubernetesObject) => this.enqueue(obj);
    this.informer.on('add', onEvent);
    this.informer.on('update', onEvent);
    // Gone without our finalizer running (someone removed it by force): tear the tenant down.
    this.informer.on('delete', (obj: KubernetesObject) => {
      const m = obj.metadata;
      if (m?.namespace && m.name && m.uid)
        void this.tearDownOrphan({ namespace: m.namespace, name: m.name, uid: m.uid });
    });
    this.informer.on('error', (err: unknown) => this.restart(err));
    // start() resolves even when its list failed: only a working watch resets the backoff.
    this.informer.on('connect', () => (this.backoffMs = 1000));
    await this.informer.start();
    this.relistTimer = setInterval(() => void this.relist(), this.opts.relistIntervalMs ?? 60_000);
    this.relistTimer.unref();
    this.opts.logger.info('watching VirtualClusters', { namespace: ns ?? '(all)' });
  }

  /** The informer stops on errors: start it again with backoff (a restart replays `add`s). */
  private restart(err: unknown): void {
    if (this.stopped || isOwnAbort(err)) return;
    this.opts.logger.warn('VirtualCluster watch failed; restarting', {
      error: errorText(err),
      inMs: this.backoffMs,
    });
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.informer?.start().catch((e: unknown) => this.restart(e));
    }, this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
  }

  private async relist(): Promise<void> {
    try {
      // Workflows first, objects second: a workflow listed here was started for an object that
      // existed before this object list was taken, so a missing object really is gone.
      const running = await this.runningWorkflows();
      const { items } = await this.opts.host.listVirtualClusters(this.opts.namespace);
      const live = new Set(items.map((i) => (i as KubernetesObject).metadata?.uid));
      for (const item of items) this.enqueue(item as KubernetesObject);
      for (const ref of running) if (!live.has(ref.uid)) await this.tearDownOrphan(ref);
    } catch (e) {
      this.opts.logger.warn('relist failed', { error: (e as Error).message });
    }
  }

  /** The VirtualClusters this watcher's workflows are running for. */
  private async runningWorkflows(): Promise<VirtualClusterRef[]> {
    const query = `WorkflowType = 'virtualClusterWorkflow' AND ExecutionStatus = 'Running' AND TaskQueue = '${this.opts.taskQueue}'`;
    const refs: VirtualClusterRef[] = [];
    for await (const wf of this.opts.client.workflow.list({ query })) {
      const ref = refFromWorkflowId(wf.workflowId);
      if (ref && (!this.opts.namespace || ref.namespace === this.opts.namespace)) refs.push(ref);
    }
    return refs;
  }

  /** Asks a still-running workflow to tear down; its object is gone, so no finalizer waits. */
  private async tearDownOrphan(ref: VirtualClusterRef): Promise<void> {
    try {
      await this.opts.client.workflow.getHandle(workflowIdFor(ref)).signal(deleteRequestedSignal);
      this.opts.logger.warn(
        'VirtualCluster gone without teardown (finalizer removed by hand?); tearing down',
        {
          vc: `${ref.namespace}/${ref.name}`,
        },
      );
    } catch (e) {
      if (!(e instanceof WorkflowNotFoundError)) {
        this.opts.logger.warn('could not request teardown; the next relist retries', {
          vc: `${ref.namespace}/${ref.name}`,
          error: (e as Error).message,
        });
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.relistTimer);
    clearTimeout(this.restartTimer);
    await this.informer?.stop();
  }

  /** Resolves when every queued event has been handled (tests). */
  async idle(): Promise<void> {
    while (this.queues.size > 0) await Promise.all([...this.queues.values()]);
  }

  private enqueue(obj: KubernetesObject): void {
    if (this.stopped) return;
    const key = keyOf(obj);
    const prev = this.queues.get(key) ?? Promise.resolve();
    const next = prev
      .then(() => this.reconcile(obj))
      .catch((e: unknown) => {
        this.opts.logger.warn('reconcile failed; the next event or relist retries', {
          vc: key,
          // With its cause: a Temporal client error says what the server answered only there.
          error: errorText(e),
        });
      })
      .finally(() => {
        if (this.queues.get(key) === next) this.queues.delete(key);
      });
    this.queues.set(key, next);
  }

  private async reconcile(raw: KubernetesObject): Promise<void> {
    const parsed = VirtualCluster.safeParse(raw);
    if (!parsed.success) {
      await this.rejectInvalid(
        raw,
        parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      );
      return;
    }
    const vc = parsed.data;
    const ref: VirtualClusterRef = {
      namespace: vc.metadata.namespace,
      name: vc.metadata.name,
      uid: vc.metadata.uid,
    };
    const finalizers = vc.metadata.finalizers ?? [];

    if (vc.metadata.deletionTimestamp) {
      if (finalizers.includes(FINALIZER) && !this.deleting.has(ref.uid)) {
        this.deleting.add(ref.uid);
        void this.finishDeletion(ref, vc)
          .catch((e: unknown) =>
            this.opts.logger.warn('teardown not finished; the next event or relist retries', {
              vc: `${ref.namespace}/${ref.name}`,
              error: (e as Error).message,
            }),
          )
          .finally(() => this.deleting.delete(ref.uid));
      }
      return;
    }

    if (!finalizers.includes(FINALIZER)) {
      try {
        await this.opts.host.setFinalizers(
          ref,
          [...finalizers, FINALIZER],
          vc.metadata.resourceVersion ?? '',
        );
      } catch (e) {
        if (isConflict(e) || isNotFound(e)) return; // a newer event follows
        throw e;
      }
    }

    const generation = vc.metadata.generation ?? 1;
    if (this.delivered.get(ref.uid) !== generation) {
      const { kubeconfig: _credential, ...spec } = vc.spec;
      await this.signalWithStart(ref, spec, generation);
      this.delivered.set(ref.uid, generation);
    }
    // A tenant provisioned before certificate renewal waits without a timer: wake it once, so
    // its workflow learns when its certificates expire (and renews them from then on).
    const phase = vc.status?.phase;
    if (
      !vc.status?.certificates &&
      (phase === 'Ready' || phase === 'Sleeping') &&
      !this.certificatesChecked.has(ref.uid)
    ) {
      this.certificatesChecked.add(ref.uid);
      await this.opts.client.workflow
        .getHandle(workflowIdFor(ref))
        .signal(checkCertificatesSignal)
        .catch((e: unknown) =>
          this.opts.logger.warn('could not ask for a certificate check', {
            vc: `${ref.namespace}/${ref.name}`,
            error: (e as Error).message,
          }),
        );
    }
  }

  private async signalWithStart(
    ref: VirtualClusterRef,
    spec: DesiredSpec,
    generation: number,
    teardown = false,
  ): Promise<string> {
    const input: VirtualClusterWorkflowInput = {
      ref,
      spec,
      generation,
      searchAttributes: this.opts.searchAttributes,
      ...(this.opts.promotionRetryMs ? { promotionRetryMs: this.opts.promotionRetryMs } : {}),
    };
    const common = {
      workflowId: workflowIdFor(ref),
      taskQueue: this.opts.taskQueue,
      args: [input] as [VirtualClusterWorkflowInput],
      ...(this.opts.searchAttributes
        ? {
            typedSearchAttributes: [
              { key: searchAttributes.namespace, value: ref.namespace },
              { key: searchAttributes.name, value: ref.name },
              { key: searchAttributes.phase, value: teardown ? 'Deleting' : 'Pending' },
            ],
          }
        : {}),
    };
    const handle = teardown
      ? await this.opts.client.workflow.signalWithStart<typeof virtualClusterWorkflow, []>(
          'virtualClusterWorkflow',
          {
            ...common,
            signal: deleteRequestedSignal,
            signalArgs: [],
          },
        )
      : await this.opts.client.workflow.signalWithStart<
          typeof virtualClusterWorkflow,
          [{ spec: DesiredSpec; generation: number }]
        >('virtualClusterWorkflow', {
          ...common,
          signal: specChangedSignal,
          signalArgs: [{ spec, generation }],
        });
    this.opts.logger.info(teardown ? 'requested teardown' : 'delivered spec', {
      vc: `${ref.namespace}/${ref.name}`,
      generation,
    });
    return handle.workflowId;
  }

  /** Tears the tenant down through its workflow, then lets the object go. */
  private async finishDeletion(ref: VirtualClusterRef, vc: VirtualCluster): Promise<void> {
    const { kubeconfig: _credential, ...spec } = vc.spec;
    const workflowId = await this.signalWithStart(ref, spec, vc.metadata.generation ?? 1, true);
    try {
      await this.opts.client.workflow.getHandle(workflowId).result();
    } catch (e) {
      if (!(e instanceof WorkflowNotFoundError)) {
        this.opts.logger.warn('teardown workflow did not complete; will retry', {
          vc: keyOf(vc),
          error: (e as Error).message,
        });
        return;
      }
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.opts.host.getVirtualCluster(ref);
      if (!current) return;
      const rest = (current.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
      try {
        await this.opts.host.setFinalizers(ref, rest, current.metadata.resourceVersion ?? '');
        this.delivered.delete(ref.uid);
        this.opts.logger.info('tenant deleted; finalizer removed', { vc: `${ref.namespace}/${ref.name}` });
        return;
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
    }
  }

  /** An object the API server accepted but the operator cannot read: say so in its status. */
  private async rejectInvalid(raw: KubernetesObject, message: string): Promise<void> {
    const m = raw.metadata;
    if (!m?.namespace || !m.name || !m.uid) return;
    this.opts.logger.warn('invalid VirtualCluster', { vc: keyOf(raw), message });
    await this.opts.host.patchStatus(
      { namespace: m.namespace, name: m.name, uid: m.uid },
      {
        phase: 'Failed',
        reason: 'InvalidSpec',
        message,
        ...(m.generation ? { observedGeneration: m.generation } : {}),
      },
    );
  }
}
