/**
 * `kosmos-vc resize <namespace>/<name> [flags]`: changes what a VirtualCluster has promoted and
 * follows the change until the workflow has applied it.
 *
 * The VirtualCluster's spec stays the one source of truth: the command patches
 * spec.promoteResources (so `kubectl get vc -o yaml` and GitOps tools see the change), the
 * watcher hands it to the running workflow, and the command prints the status as it moves.
 *
 *   --nodes a,b        the full list of promoted nodes
 *   --add-node x       add one (repeatable)        --remove-node x   remove one (repeatable)
 *   --cpu 10           promoted CPU                --memory 100Gi    promoted memory
 *   --no-resources     stop promoting CPU/memory   --timeout 300     seconds to wait (default 300)
 */
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { GROUP, PLURAL, PromoteResources, VERSION, type VirtualCluster } from '../api/virtualCluster.js';
import { hostCluster } from './host.js';
import { isConflict } from '../api/kubeClient.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** `[<namespace>/]<name>`, the form every command takes. */
export function parseTarget(
  target: string,
  namespace: string | undefined,
): { namespace: string; name: string } {
  const m = /^(?:([^/]+)\/)?([^/]+)$/.exec(target);
  if (!m) throw new UsageError(`"${target}" is not [<namespace>/]<name>`);
  if (m[1] && namespace && m[1] !== namespace)
    throw new UsageError(`"${target}" names namespace ${m[1]}, but --namespace says ${namespace}`);
  return { namespace: m[1] ?? namespace ?? 'default', name: m[2]! };
}

export interface ResizeRequest {
  namespace: string;
  name: string;
  nodes?: string[];
  add: string[];
  remove: string[];
  cpu?: string;
  memory?: string;
  noResources: boolean;
  timeoutMs: number;
}

/** The resize options as the command line gives them (src/cli/program.ts). */
export interface ResizeOptions {
  nodes?: string;
  addNode?: string[];
  removeNode?: string[];
  cpu?: string;
  memory?: string;
  /** false for --no-resources */
  resources?: boolean;
  timeout?: string;
}

/** A resize request from the command line's target and options; UsageError when they disagree. */
export function resizeRequest(target: string, o: ResizeOptions): ResizeRequest {
  const { namespace, name } = parseTarget(target, undefined);
  const noResources = o.resources === false;
  if (noResources && (o.cpu || o.memory))
    throw new UsageError('--no-resources cannot be combined with --cpu or --memory');
  const timeout = Number(o.timeout ?? 300);
  if (!Number.isFinite(timeout) || timeout <= 0)
    throw new UsageError('--timeout must be a number of seconds');
  return {
    namespace,
    name,
    ...(o.nodes !== undefined
      ? {
          nodes: o.nodes
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean),
        }
      : {}),
    add: o.addNode ?? [],
    remove: o.removeNode ?? [],
    ...(o.cpu ? { cpu: o.cpu } : {}),
    ...(o.memory ? { memory: o.memory } : {}),
    noResources,
    timeoutMs: timeout * 1000,
  };
}

/** The new spec.promoteResources, validated like the CRD would (a clear error, nothing sent). */
export function desiredPromotion(current: PromoteResources | undefined, r: ResizeRequest): PromoteResources {
  let nodes = r.nodes ?? [...(current?.nodes ?? [])];
  for (const n of r.add) if (!nodes.includes(n)) nodes.push(n);
  nodes = nodes.filter((n) => !r.remove.includes(n));
  let resources = current?.resources;
  if (r.noResources) resources = undefined;
  else if (r.cpu !== undefined || r.memory !== undefined)
    resources = {
      ...resources,
      ...(r.cpu !== undefined ? { cpu: r.cpu } : {}),
      ...(r.memory !== undefined ? { memory: r.memory } : {}),
    };
  const next = { nodes, ...(resources ? { resources } : {}) };
  const parsed = PromoteResources.safeParse(next);
  if (!parsed.success)
    throw new UsageError(
      `invalid promoteResources: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  return parsed.data;
}

function summary(vc: VirtualCluster): string {
  const p = vc.status?.promoted;
  const pending = p?.pending?.length
    ? `; not promoted: ${p.pending.map((x) => `${x.node} (${x.reason})`).join(', ')}`
    : '';
  return `${p?.nodeCount ?? 0} node(s), ${p?.cpu ?? '0'} CPU, ${p?.memory ?? '0'}${pending}`;
}

/**
 * A change wakes a tenant asleep for idleness: its `Waking` follows the status that records the
 * change within moments. Not seen within this, the workflow found nothing to change after all (a
 * later resize undid this one before it was handled): the change is recorded, as for a sleep.
 */
export const WAKE_GRACE_MS = 5_000;

/**
 * What the VirtualCluster now says about the resize written at `generation`: still working on
 * it (`undefined`), or the exit code and what to print (`secs` since it was written).
 * `wakeExpected`: the write made that generation (a resize to what is there already makes none)
 * and a tenant asleep for idleness has not said so for WAKE_GRACE_MS since.
 */
export function resizeOutcome(
  vc: VirtualCluster,
  generation: number,
  secs: number,
  wakeExpected = true,
): { code: number; message: string } | undefined {
  const s = vc.status;
  if ((s?.observedGeneration ?? 0) < generation) return undefined;
  if (s?.phase === 'Sleeping') {
    if (s.reason === 'WakeFailed')
      return {
        code: 1,
        message: `recorded in ${secs}s, but the tenant failed to wake: ${s.message} (the retry signal wakes it; one asleep for idleness is tried again every minute)`,
      };
    // A change wakes a tenant asleep for idleness (not one asked to sleep): its wake follows.
    if (asleepForIdleness(vc) && wakeExpected) return undefined;
    if (s.reason !== 'Waking')
      return {
        code: 0,
        message: `recorded in ${secs}s; the tenant sleeps: it applies when the tenant wakes (spec.sleep: false)`,
      };
  }
  // Still working on it: a resize, waking (the resize applies once it is up), or provisioning
  // (a Failed tenant's spec change provisions it again: the resize applies with it).
  const busy =
    s?.reason === 'Resizing' ||
    s?.reason === 'Waking' ||
    s?.phase === undefined ||
    s.phase === 'Pending' ||
    s.phase === 'Preparing' ||
    s.phase === 'Initialized';
  if (busy) return undefined;
  if (s.reason === 'ResizeFailed' || s.phase === 'Failed')
    return { code: 1, message: `resize failed: ${s.message}` };
  const cond = s.conditions?.find((c) => c.type === 'NodesPromoted');
  return { code: cond?.status === 'True' ? 0 : 3, message: `done in ${secs}s: ${summary(vc)}` };
}

/** Asleep for idleness (or failing to fall so), not asked to sleep by its spec. */
function asleepForIdleness(vc: VirtualCluster): boolean {
  const s = vc.status;
  return (
    s?.phase === 'Sleeping' && (s.reason === 'Idle' || s.reason === 'SleepFailed') && vc.spec.sleep !== true
  );
}

/** Exit code: 0 applied, 3 applied with nodes still pending, 1 failed or timed out. */
export async function resize(
  r: ResizeRequest,
  kubeconfigPath: string | undefined,
  out: (line: string) => void,
): Promise<number> {
  const host = hostCluster(kubeconfigPath);
  const ref = { namespace: r.namespace, name: r.name };
  // Read, change, write with the resourceVersion read: a concurrent resize makes this one
  // start over from what the other wrote instead of overwriting it.
  let generation = 0;
  let changed = true;
  /** Since when the tenant has said it sleeps for idleness at the new generation. */
  let idleSince: number | undefined;
  for (let attempt = 1; ; attempt++) {
    const vc = await host.getVirtualCluster(ref);
    if (!vc) throw new UsageError(`VirtualCluster ${r.namespace}/${r.name} not found`);
    const promote = desiredPromotion(vc.spec.promoteResources, r);
    if (attempt === 1) out(`${r.namespace}/${r.name}: now ${summary(vc)}`);
    out(
      `requesting nodes [${(promote.nodes ?? []).join(', ')}]${promote.resources ? `, resources ${JSON.stringify(promote.resources)}` : ', no resources'}`,
    );
    try {
      const patched = (await host.custom.patchNamespacedCustomObject(
        {
          group: GROUP,
          version: VERSION,
          plural: PLURAL,
          namespace: r.namespace,
          name: r.name,
          body: {
            metadata: { resourceVersion: vc.metadata.resourceVersion },
            spec: { promoteResources: { nodes: promote.nodes ?? [], resources: promote.resources ?? null } },
          },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      )) as { metadata: { generation: number } };
      generation = patched.metadata.generation;
      changed = generation !== vc.metadata.generation;
      break;
    } catch (e) {
      if (!isConflict(e) || attempt >= 5) throw e;
      out('the VirtualCluster changed meanwhile; applying the change to the new version');
    }
  }

  const started = Date.now();
  let last = '';
  for (;;) {
    const now = await host.getVirtualCluster(ref);
    if (!now) {
      out('the VirtualCluster was deleted');
      return 1;
    }
    const s = now.status;
    const line = `${s?.phase ?? 'Pending'}: ${s?.message ?? ''}`;
    const secs = Math.round((Date.now() - started) / 1000);
    if (line !== last) out(`[${secs}s] ${line}`);
    last = line;
    idleSince =
      asleepForIdleness(now) && (s?.observedGeneration ?? 0) >= generation
        ? (idleSince ?? Date.now())
        : undefined;
    const outcome = resizeOutcome(
      now,
      generation,
      secs,
      changed && Date.now() - (idleSince ?? Date.now()) < WAKE_GRACE_MS,
    );
    if (outcome) {
      out(outcome.message);
      return outcome.code;
    }
    if (Date.now() - started > r.timeoutMs) {
      out(
        `gave up after ${secs}s; the workflow keeps working on it (see kubectl get vc ${r.name} -n ${r.namespace} -o wide)`,
      );
      return 1;
    }
    await new Promise((res) => setTimeout(res, 500));
  }
}
