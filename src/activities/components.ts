/**
 * Starting a tenant's control-plane components where its allocation placed them: on this
 * machine (the process runtime) or as pods of its host namespace (ADR 14), each waited for until
 * ready, and what a step says when one could not start.
 */
import { ApplicationFailure } from '@temporalio/activity';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import type { Binaries } from '../runtime/binaries.js';
import {
  IMAGE_PROGRAMS,
  pkiDir,
  placeInHost,
  placeOnMachine,
  type ControlPlaneLayout,
  type ControlPlanePrograms,
  type Placement,
} from '../runtime/controlPlane.js';
import { renderKubeconfigs } from '../runtime/kubeconfigs.js';
import { ComponentStartError, FILE_SOURCES, storeFiles } from '../runtime/podWorkload.js';
import {
  ComponentExitedError,
  filesDigestEnv,
  type ComponentSpec,
  type ControlPlaneRuntime,
  type FileSet,
} from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import { hostNamespace, promotionTaint } from '../clustertree/naming.js';
import type { HostCluster } from './hostCluster.js';
import { TENANT_API_SERVICE } from './tenantNetwork.js';
import { FailureType, LABELS, type StepInput, type TenantAllocation } from './types.js';
import { currentContext, orCancelled } from './wait.js';

/** A tenant whose control plane runs as pods of its host namespace (allocated so, ADR 14). */
export const inPods = (a: TenantAllocation): boolean => a.runtime === 'kubernetes';

export interface ComponentStarterDeps {
  host: HostCluster;
  runtime: ControlPlaneRuntime;
  bins: () => Promise<Binaries>;
  readinessTimeoutMs: number;
  /** Where this worker starts new tenants' control planes (ActivityDeps.controlPlaneRuntime). */
  controlPlaneRuntime?: 'process' | 'kubernetes';
  /** Test-only: tenant etcd skips fsync. */
  etcdUnsafeNoFsync?: boolean;
  log(ref: VirtualClusterRef): Logger;
}

export function createComponentStarter(deps: ComponentStarterDeps) {
  /** A tenant in pods on a worker that runs none: its steps would half-work (a renewal that restarts nothing). */
  function refuseWithoutPods(ref: VirtualClusterRef, a: TenantAllocation): void {
    if (inPods(a) && deps.controlPlaneRuntime !== 'kubernetes')
      throw ApplicationFailure.nonRetryable(
        `the control plane of ${ref.namespace}/${ref.name} runs as pods: this worker runs none (set KOSMOS_VC_RUNTIME=kubernetes)`,
        FailureType.InvalidSpec,
      );
  }

  /** Where a tenant's components find their files and one another, by the runtime it was allocated on. */
  async function placed(
    ref: VirtualClusterRef,
    a: TenantAllocation,
    l: ControlPlaneLayout,
  ): Promise<{ p: Placement; programs: ControlPlanePrograms }> {
    if (!inPods(a)) return { p: placeOnMachine(l), programs: await deps.bins() };
    refuseWithoutPods(ref, a);
    const p = placeInHost({
      id: a.id,
      namespace: hostNamespace(ref),
      serviceCIDR: a.serviceCIDR,
      apiService: TENANT_API_SERVICE,
      // The tenant's `kubernetes` endpoint: its API server's Service (the allocation's address).
      address: a.address,
      probePki: pkiDir(l),
      ...(deps.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {}),
    });
    return { p, programs: IMAGE_PROGRAMS };
  }

  /**
   * The kubeconfigs of the controller-manager and scheduler pods, for the API server's Service:
   * theirs alone (the admin's and the operator's stay with the operator).
   */
  async function storeKubeconfigs(
    ref: VirtualClusterRef,
    l: ControlPlaneLayout,
    p: Placement,
  ): Promise<Record<string, string> | undefined> {
    if (!p.pod) return undefined;
    const all = await renderKubeconfigs(pkiDir(l), p.apiserverURL, l.id);
    await storeFiles(
      deps.host.core,
      p.pod.namespace,
      FILE_SOURCES.kubeconfigs.name,
      { 'controller-manager.conf': all['controller-manager.conf'], 'scheduler.conf': all['scheduler.conf'] },
      { [LABELS.managedBy]: 'kosmos-vc', [LABELS.virtualCluster]: ref.name },
    );
    return all;
  }

  /**
   * `spec` with the digest of the kubeconfigs it reads once, as it finds them (`rendered` for
   * pods, this machine's files otherwise): a renewal's make a new spec, which the runtime
   * restarts or rolls in place (ADR 10).
   */
  async function withKubeconfigDigest(
    spec: ComponentSpec,
    reads: FileSet,
    rendered: Record<string, string> | undefined,
  ): Promise<ComponentSpec> {
    const texts = await Promise.all(
      reads.keys.map(async (k) => (rendered ? (rendered[k] ?? '') : readFile(join(reads.path, k), 'utf8'))),
    );
    const files = Object.fromEntries(reads.keys.map((k, i) => [k, texts[i]!]));
    return { ...spec, env: { ...spec.env, ...filesDigestEnv(files) } };
  }

  /**
   * Builds a component's spec for where the tenant's control plane runs, and starts it.
   * `renewed`: its kubeconfigs are a renewal's, and their digest in its spec restarts it. Not
   * at a start: a warm-pool slot's processes, started without it, are adopted at a claim that
   * issued the leaves again (the slot's still serve for a year).
   */
  async function startPlaced(
    input: StepInput,
    build: (p: Placement, programs: ControlPlanePrograms) => ComponentSpec,
    l: ControlPlaneLayout,
    renewed = false,
  ): Promise<{ pid: number | undefined }> {
    const { p, programs } = await placed(input.ref, input.allocation, l);
    const built = build(p, programs);
    const spec = p.pod ? { ...built, tolerates: promotionTaint(input.ref) } : built;
    const reads = spec.files?.find((f) => f.source === 'kubeconfigs');
    if (!reads) return startComponent(input, spec);
    // For the components that read them (unchanged ones are not written again).
    const rendered = await storeKubeconfigs(input.ref, l, p);
    return startComponent(input, renewed ? await withKubeconfigDigest(spec, reads, rendered) : spec);
  }

  /**
   * Starts one component and waits for it; a crash before ready is final for this attempt's step.
   * A cancelled step (the other of two at once failed: ADR 12, decision 22) starts nothing more
   * and stops waiting.
   */
  async function startComponent(input: StepInput, spec: ComponentSpec): Promise<{ pid: number | undefined }> {
    const signal = currentContext()?.cancellationSignal;
    let status;
    try {
      if (signal?.aborted) throw signal.reason as Error;
      status = await deps.runtime.ensure(spec);
      await orCancelled(
        deps.runtime.waitReady(spec.owner, spec.name, deps.readinessTimeoutMs, signal),
        signal,
      );
    } catch (e) {
      throw startFailure(e, spec.name);
    }
    deps.log(input.ref).info('component ready', { component: spec.name, pid: status.pid });
    return { pid: status.pid };
  }

  /** A component that could not start or exited: no retry mends an image that is not there either. */
  function startFailure(e: unknown, component: string): unknown {
    if (e instanceof ComponentStartError)
      return ApplicationFailure.nonRetryable(e.message, FailureType.ComponentNotStarted, { component });
    if (e instanceof ComponentExitedError)
      return ApplicationFailure.nonRetryable(e.message, FailureType.ComponentExited, {
        component: e.component,
        exitCode: e.exitCode,
      });
    return e;
  }

  return { refuseWithoutPods, startPlaced, startFailure };
}
