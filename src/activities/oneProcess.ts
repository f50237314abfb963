/**
 * A tenant's API server, controller-manager and scheduler as one process of kube-control-plane
 * (KOSMOS_VC_ONE_PROCESS; ADR 12, decisions 16 and 21; the process runtime only): the API server's step
 * starts all three, the others' steps wait for theirs to serve. What runs decides, not the
 * setting alone: another worker, with or without it, may have started the tenant's API server.
 */
import { ApplicationFailure } from '@temporalio/activity';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import { certPath, ensureCurrentFiles, PkiFile } from '../pki/controlPlanePki.js';
import { prober } from '../runtime/probe.js';
import { ComponentsMissingError, type Binaries } from '../runtime/binaries.js';
import {
  oneProcessSpec,
  pkiDir,
  placeOnMachine,
  type ControlPlaneLayout,
  type ControlPlanePrograms,
  type Placement,
} from '../runtime/controlPlane.js';
import { writeReloadingKubeconfigs } from '../runtime/kubeconfigs.js';
import type { ComponentSpec, ComponentStatus, ControlPlaneRuntime } from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import { inPods } from './components.js';
import { FailureType, type StepInput, type TenantAllocation } from './types.js';

type Started = { pid: number | undefined };
type Build = (p: Placement, programs: ControlPlanePrograms) => ComponentSpec;

export interface OneProcessDeps {
  runtime: ControlPlaneRuntime;
  bins: () => Promise<Binaries>;
  /** KOSMOS_VC_ONE_PROCESS: new starts of a tenant's API server take the other two in. */
  enabled: boolean;
  readinessTimeoutMs: number;
  /** Builds a component's spec for where the tenant's control plane runs, and starts it. */
  startPlaced(input: StepInput, build: Build, l: ControlPlaneLayout): Promise<Started>;
  /** The step's failure for a component that could not start or exited. */
  startFailure(e: unknown, component: string): unknown;
  log(ref: VirtualClusterRef): Logger;
}

/** The program's name, not its path: another worker's cache or release has another path. */
export const runsKubeControlPlane = (c: ComponentStatus): boolean =>
  c.command !== undefined && basename(c.command) === 'kube-control-plane';

export function createOneProcess(deps: OneProcessDeps) {
  /** The programs with kube-control-plane, which setup builds. */
  async function programs(): Promise<Binaries & { kubeControlPlane: string }> {
    const b = await deps.bins();
    if (!b.kubeControlPlane)
      throw ApplicationFailure.nonRetryable(
        new ComponentsMissingError(['kube-control-plane']).message,
        FailureType.ComponentsMissing,
      );
    return { ...b, kubeControlPlane: b.kubeControlPlane };
  }

  /** The API server of this owner as it runs, if it does. */
  async function runningApiserver(owner: string): Promise<ComponentStatus | undefined> {
    return (await deps.runtime.list(owner)).find((c) => c.name === 'kube-apiserver');
  }

  /**
   * The one process's spec builder. Its controller-manager's and scheduler's kubeconfigs name
   * their certificate files (written here too): a renewal, which swaps
   * the files, restarts nothing. The spec holds the digest of what the two read once, those
   * kubeconfigs and the CA bundle, so that a new bundle (a CA rotation's steps) replaces the
   * process, under the runtime's lock and recorded (a retry or another worker finishes what an
   * attempt began).
   */
  async function builder(l: ControlPlaneLayout): Promise<(p: Placement) => ComponentSpec> {
    const b = await programs();
    const digest = createHash('sha256');
    // A tenant from a version before them has none yet.
    for (const text of await writeReloadingKubeconfigs(l)) digest.update(text);
    digest.update(await readFile(certPath(pkiDir(l), PkiFile.ca)));
    const clients = digest.digest('hex').slice(0, 16);
    return (placed) => oneProcessSpec(placed, b, clients);
  }

  /**
   * Starts (or adopts) the one process: first a controller-manager and scheduler of their own left
   * from a start without the setting (a warm-pool slot, a tenant before the change) are stopped,
   * since the process serves their ports.
   */
  async function start(input: StepInput, l: ControlPlaneLayout): Promise<Started> {
    await ensureCurrentFiles(pkiDir(l));
    const build = await builder(l);
    for (const name of ['kube-controller-manager', 'kube-scheduler'] as const)
      await deps.runtime.stop(input.allocation.id, name);
    return deps.startPlaced(input, build, l);
  }

  /**
   * The controller-manager's or scheduler's step for a tenant whose API server is one process:
   * the process is adopted (or started, on a worker that did not start it) and the component's
   * port awaited, the process's readiness checked between tries so that its exit ends the wait
   * as a separate component's would. The tenant's files are brought up to date (`current`) only
   * when the process has to be started: in the one that runs, the API server's step just did
   * (ADR 12, decision 23).
   */
  async function served(
    input: StepInput,
    build: Build,
    l: ControlPlaneLayout,
    current: () => Promise<ControlPlaneLayout>,
  ): Promise<Started> {
    const spec = build(placeOnMachine(l), await deps.bins());
    // A one process that runs is waited for as it is (another worker's build of it may have
    // another path: not replaced for that); else it is started or adopted.
    const api = await runningApiserver(spec.owner);
    const { pid } = api && runsKubeControlPlane(api) ? { pid: api.pid } : await start(input, await current());
    const probe = prober(spec.probe!);
    const deadline = Date.now() + deps.readinessTimeoutMs;
    for (;;) {
      if ((await probe().catch(() => 0)) === 200) {
        deps.log(input.ref).info('component ready', { component: spec.name, in: 'kube-apiserver', pid });
        return { pid };
      }
      if (Date.now() > deadline)
        throw new Error(`${spec.name} of ${spec.owner} did not serve within ${deps.readinessTimeoutMs} ms`);
      await pause(100);
      try {
        await deps.runtime.waitReady(spec.owner, 'kube-apiserver', Math.max(1, deadline - Date.now()));
      } catch (e) {
        throw deps.startFailure(e, spec.name);
      }
    }
  }

  return {
    /** A new start of this tenant's API server takes the controller-manager and scheduler in. */
    joins: (a: TenantAllocation): boolean => deps.enabled && !inPods(a),
    /** The owner's API server runs kube-control-plane: its controller-manager and scheduler are in it. */
    async runs(owner: string): Promise<boolean> {
      const api = await runningApiserver(owner);
      return api !== undefined && runsKubeControlPlane(api);
    },
    /**
     * Whether the controller-manager's and scheduler's steps find them in the one process: by what
     * runs where the API server runs, by the setting where it does not yet.
     */
    async serves(a: TenantAllocation): Promise<boolean> {
      if (inPods(a)) return false;
      const api = await runningApiserver(a.id);
      return api ? runsKubeControlPlane(api) : deps.enabled;
    },
    /** The pid of the owner's API server (in one process or not), if it runs. */
    pid: async (owner: string): Promise<number | undefined> => (await runningApiserver(owner))?.pid,
    builder,
    start,
    served,
  };
}
