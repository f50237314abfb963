/**
 * Every side effect of a VirtualCluster's workflow. Each activity is idempotent: it looks at
 * what is already there and does only what is missing, so a retry, a replay or a re-run after a
 * worker crash changes nothing that was done before.
 */
import { ApplicationFailure } from '@temporalio/activity';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import type { ApiServerExpose, VirtualClusterRef } from '../api/virtualCluster.js';
import {
  CARotationInProgressError,
  PkiMissingError,
  PkiFile,
  certPath,
  certificateExpiry,
  ensureCurrentFiles,
  writeControlPlanePki,
  type ControlPlanePkiRequest,
  type PkiOptions,
} from '../pki/controlPlanePki.js';
import { CERTIFICATE_DEFAULTS, parseDuration } from '../api/virtualCluster.js';
import { ComponentsMissingError, type Binaries } from '../runtime/binaries.js';
import {
  apiserverSpec,
  apiserverURL,
  controllerManagerSpec,
  auditDir,
  auditLogPath,
  etcdSpec,
  kubeconfigPath,
  pkiDir,
  placeOnMachine,
  podSANs,
  schedulerSpec,
  writeAuditPolicy,
  type ControlPlaneLayout,
} from '../runtime/controlPlane.js';
import { adminKubeconfig, writeKubeconfigs } from '../runtime/kubeconfigs.js';
import { prober } from '../runtime/probe.js';
import { PortAllocator } from '../runtime/ports.js';
import type { ControlPlaneRuntime } from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import { errorText } from '../api/kubeClient.js';
import { hostNamespace } from '../clustertree/naming.js';
import type { Client } from '@temporalio/client';
import { createBackupActivities } from './backup.js';
import { awaitFirstConnection, lastAuditedRequest, releaseHeldConnections, stopListening } from './idle.js';
import { both, currentContext, heartbeating, orCancelled } from './wait.js';
import {
  compileCacheDirOf,
  createClusterTreeActivities,
  type ClusterTreeDeps,
  type ClusterTreeTimings,
} from './clusterTree.js';
import { createComponentStarter, inPods } from './components.js';
import { createOneProcess } from './oneProcess.js';
import { createPromotionActivities } from './promotion.js';
import {
  applyHostNamespace,
  createTenantNetwork,
  ensureApiService,
  exposedAddress,
  exposedURL,
  TENANT_API_SERVICE,
} from './tenantNetwork.js';
import { createPkiSecret } from './pkiSecret.js';
import { ALLOCATION_FILE, createAllocation, tenantId } from './allocation.js';
import type { HostCluster } from './hostCluster.js';
import {
  FailureType,
  LABELS,
  type CertificateAction,
  type CertificateState,
  type ControlPlaneComponent,
  type IssueCertificatesInput,
  type StatusReport,
  type StepInput,
  type TenantAllocation,
} from './types.js';

export interface ActivityDeps {
  host: HostCluster;
  runtime: ControlPlaneRuntime;
  binaries: Binaries | (() => Promise<Binaries>);
  /** Tenants live under <stateDir>/tenants/<id>; ports are recorded in <stateDir>/ports.json. */
  stateDir: string;
  logger: Logger;
  /** The address tenant components listen on (the process runtime: loopback). */
  address?: string;
  readinessTimeoutMs?: number;
  portRange?: readonly [number, number];
  /** Test-only: tenant etcd skips fsync. */
  etcdUnsafeNoFsync?: boolean;
  /** clusterTree's heartbeat and resync periods (tests shorten them). */
  clusterTree?: ClusterTreeTimings;
  /**
   * An address of this machine host pods can reach (the real node's): tenant API servers and
   * tenant DNS are offered to tenant pods there. Unset: tenants get neither (simulated nodes only).
   */
  nodeAddress?: string;
  /** The host's pod range (with nodeAddress): what mirrored EndpointSlices may name. */
  podCIDR?: string;
  /** Tenants may ask for spec.podSecurity: privileged (root on their promoted nodes). */
  allowPrivilegedTenants?: boolean;
  /** The namespace of the operator's pods, which tenants' host namespaces admit (in a cluster). */
  operatorNamespace?: string;
  /**
   * The exposures of a tenant's API server outside the host (`spec.apiServer.expose`) beside
   * ClusterIP that this operator makes (KOSMOS_VC_EXPOSE_TYPES; default: NodePort and
   * LoadBalancer): a host admin who lets others write VirtualClusters may keep node ports and
   * load balancers to themselves.
   */
  exposeTypes?: readonly ('NodePort' | 'LoadBalancer')[];
  /** An image with `sh` and `sed` on the host nodes: puts a pod's tenant FQDN in /etc/hosts. */
  hostsImage?: string;
  /** Where backups are written and restored from (default <stateDir>/backups). */
  backupDir?: string;
  /** The Temporal client and task queue of scheduled backups (absent: spec.backup is refused). */
  schedules?: { client: Client; taskQueue: string };
  /**
   * Where new tenants' control planes run (ADR 14): `process` (the default) on this machine,
   * `kubernetes` as pods of their host namespaces (then `runtime` must take specs for pods: a
   * SplitRuntime). A tenant keeps the runtime it was allocated on.
   */
  controlPlaneRuntime?: 'process' | 'kubernetes';
  /**
   * Control planes started ahead for new tenants of this service range (ADR 12, decision 15;
   * the process runtime only). Absent or size 0: none.
   */
  warmPool?: { size: number; serviceCIDR: string; refillDelayMs?: number };
  /**
   * A tenant's API server, controller-manager and scheduler as one process of kube-control-plane
   * (KOSMOS_VC_ONE_PROCESS; ADR 12, decisions 16 and 21; the process runtime only): the API server's step
   * starts all three, the others' steps wait for theirs to serve.
   */
  oneProcess?: boolean;
}

export const KUBECONFIG_SECRET_KEY = 'kubeconfig';
export const kubeconfigSecretName = (ref: Pick<VirtualClusterRef, 'name'>): string =>
  `${ref.name}-kubeconfig`;

export { tenantId } from './allocation.js';

type AsyncFns = Record<string, (...args: never[]) => Promise<unknown>>;
function withHeartbeats<T extends AsyncFns>(fns: T): T {
  return Object.fromEntries(Object.entries(fns).map(([k, f]) => [k, heartbeating(f)])) as T;
}

/** status.certificates from a PKI's expiry: renewal falls due renewBefore the earliest leaf expiry. */
function certificateState(
  e: Awaited<ReturnType<typeof certificateExpiry>>,
  c: IssueCertificatesInput['spec']['certificates'],
): CertificateState {
  const renewBefore = parseDuration(c?.renewBefore ?? CERTIFICATE_DEFAULTS.renewBefore);
  return {
    notAfter: e.notAfter,
    renewAt: new Date(Date.parse(e.notAfter) - renewBefore).toISOString(),
    caNotAfter: e.caNotAfter,
    caFingerprint: e.caFingerprint,
    caRotation: e.caGeneration,
    ...(e.previousCAFingerprint ? { previousCAFingerprint: e.previousCAFingerprint } : {}),
    ...(e.previousCARetiresAt ? { previousCARetiresAt: e.previousCARetiresAt } : {}),
  };
}

/** The activities, and the warm pool their `allocate` claims from (when `deps.warmPool` asks for one). */
export function createActivitiesWithPool(deps: ActivityDeps) {
  return assemble(deps);
}

export function createActivities(deps: ActivityDeps) {
  return assemble(deps).activities;
}

function assemble(deps: ActivityDeps) {
  const address = deps.address ?? '127.0.0.1';
  const readinessTimeoutMs = deps.readinessTimeoutMs ?? 60_000;
  const ports = new PortAllocator(join(deps.stateDir, 'ports.json'), deps.portRange);
  const tenantsDir = join(deps.stateDir, 'tenants');
  let binaries: Binaries | undefined;
  const bins = async (): Promise<Binaries> => {
    if (binaries) return binaries;
    try {
      binaries = typeof deps.binaries === 'function' ? await deps.binaries() : deps.binaries;
      return binaries;
    } catch (e) {
      if (e instanceof ComponentsMissingError)
        throw ApplicationFailure.nonRetryable(e.message, FailureType.ComponentsMissing);
      throw e;
    }
  };

  const layout = (a: TenantAllocation): ControlPlaneLayout => ({
    id: a.id,
    // Where the allocating worker put it (the process runtime's data is there); a worker of
    // another machine (the kubernetes runtime) keeps its copy of the files in its own.
    dir: existsSync(a.dir) ? a.dir : join(tenantsDir, a.id),
    address: a.address,
    ports: a.ports,
    serviceCIDR: a.serviceCIDR,
    // Pods reach the API server on the node address: listen there too, not only on loopback.
    ...(deps.nodeAddress ? { bindAddress: '0.0.0.0', advertiseAddress: deps.nodeAddress } : {}),
    ...(deps.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {}),
    auditLog: true,
  });

  const pki = createPkiSecret({
    host: deps.host,
    ensureNamespace: async (ref) => {
      const vc = await deps.host.getVirtualCluster(ref);
      if (!vc || vc.metadata.deletionTimestamp)
        throw new Error(
          `${ref.namespace}/${ref.name} is gone or being deleted: its host namespace is not made again`,
        );
      await applyHostNamespace(deps.host, ref, deps.allowPrivilegedTenants ?? false);
    },
  });

  /**
   * One tenant's files are brought up to date by one step at a time in this worker: a step that
   * asks while another step's sync is under way (etcd's and the API server's at once: ADR 12,
   * decision 22) takes that sync's result, read as it began, rather than waiting to read again.
   * Nothing in a tenant's workflow changes its set at the same time (issuing and renewing are
   * steps of their own).
   */
  const syncing = new Map<string, Promise<ControlPlaneLayout>>();
  /**
   * The tenant's layout once its certificate files are the Secret's (ADR 14), with the
   * kubeconfigs written from them: what every step that reads the files starts with.
   */
  function tenantFiles(ref: VirtualClusterRef, a: TenantAllocation): Promise<ControlPlaneLayout> {
    const l = layout(a);
    const under = syncing.get(l.id);
    if (under) return under;
    const sync = (async () => {
      const { rewritten } = await pki.sync(ref, pkiDir(l));
      const issued = existsSync(certPath(pkiDir(l), PkiFile.ca));
      if (rewritten || (issued && !existsSync(kubeconfigPath(l, 'operator')))) await writeKubeconfigs(l);
      return l;
    })().finally(() => syncing.delete(l.id));
    syncing.set(l.id, sync);
    return sync;
  }

  /** Whether the tenant's etcd on this machine answers its readiness probe now. */
  async function etcdServes(l: ControlPlaneLayout): Promise<boolean> {
    const probe = etcdSpec(placeOnMachine(l), await bins()).probe;
    return probe ? (await prober(probe)().catch(() => 0)) === 200 : true;
  }

  const starter = createComponentStarter({
    host: deps.host,
    runtime: deps.runtime,
    bins,
    readinessTimeoutMs,
    ...(deps.controlPlaneRuntime ? { controlPlaneRuntime: deps.controlPlaneRuntime } : {}),
    ...(deps.etcdUnsafeNoFsync ? { etcdUnsafeNoFsync: true } : {}),
    log: (ref) => log(ref),
  });
  const { refuseWithoutPods, startPlaced, startFailure } = starter;

  /**
   * Writes a listener's status: tried three times, 10 s each, until `ended` (the wait is over:
   * a write in flight is aborted, and the wait ends without waiting for it; one the server had
   * already taken may still land). Never fails the listener: the workflow writes the status
   * again when the wait ends.
   */
  async function announceStatus(
    ref: VirtualClusterRef,
    report: StatusReport,
    ended: AbortSignal,
  ): Promise<void> {
    for (let attempt = 1; attempt <= 3 && !ended.aborted; attempt++) {
      try {
        await deps.host.patchStatus(ref, report, AbortSignal.any([ended, AbortSignal.timeout(10_000)]));
        return;
      } catch (e) {
        if (ended.aborted) return;
        if (attempt === 3)
          log(ref).warn('status not written: the workflow writes it when the wait ends', {
            error: errorText(e),
          });
        // The pause ends with the wait too.
        else await pause(1_000 * attempt, undefined, { signal: ended }).catch(() => undefined);
      }
    }
  }

  const log = (ref: VirtualClusterRef) => deps.logger.child({ vc: `${ref.namespace}/${ref.name}` });

  const one = createOneProcess({
    runtime: deps.runtime,
    bins,
    enabled: deps.oneProcess === true,
    readinessTimeoutMs,
    startPlaced,
    startFailure,
    log,
  });

  const network = deps.nodeAddress
    ? createTenantNetwork({
        host: deps.host,
        runtime: deps.runtime,
        ports,
        nodeAddress: deps.nodeAddress,
        ...(deps.podCIDR ? { podCIDR: deps.podCIDR } : {}),
        coredns: async () => (await bins()).coredns,
        readinessTimeoutMs,
        logger: deps.logger,
        ...(deps.allowPrivilegedTenants ? { allowPrivilegedTenants: true } : {}),
      })
    : undefined;

  const allocation = createAllocation({
    host: deps.host,
    runtime: deps.runtime,
    ports,
    stateDir: deps.stateDir,
    tenantsDir,
    address,
    ...(deps.controlPlaneRuntime ? { controlPlaneRuntime: deps.controlPlaneRuntime } : {}),
    ...(deps.allowPrivilegedTenants ? { allowPrivilegedTenants: true } : {}),
    ...(network ? { network } : {}),
    admit: allowExposure,
    ...(deps.warmPool ? { warmPool: deps.warmPool } : {}),
    startSlot,
    logger: deps.logger,
  });
  const { controlPlaneOwner } = allocation;

  const treeDeps: ClusterTreeDeps = {
    host: deps.host,
    runtime: deps.runtime,
    ports,
    logger: deps.logger,
    entry: async () => (await bins()).clusterTree,
    compileCacheDir: compileCacheDirOf(deps.stateDir),
    layoutOf: (input) => tenantFiles(input.ref, input.allocation),
    tenantId,
    controlPlaneOwner,
    tenantDir: (ref) => join(tenantsDir, tenantId(ref)),
    readinessTimeoutMs,
    ...(deps.clusterTree ? { timings: deps.clusterTree } : {}),
    ...(network ? { network } : {}),
    ...(deps.allowPrivilegedTenants ? { allowPrivilegedTenants: true } : {}),
    ...(deps.hostsImage ? { hostsImage: deps.hostsImage } : {}),
    ...(deps.operatorNamespace ? { operatorNamespace: deps.operatorNamespace } : {}),
    refuseWithoutPods,
    startFailure,
  };
  const clusterTree = createClusterTreeActivities(treeDeps);

  /**
   * The ClusterIP of a tenant in pods: the one its allocation recorded, which every certificate
   * and kubeconfig names. A Service made again since (deleted by hand) has another: said, not
   * papered over.
   */
  async function servedAt(ref: VirtualClusterRef, recorded: string): Promise<string> {
    const ip = await ensureApiService(deps.host, ref, deps.allowPrivilegedTenants ?? false);
    if (ip !== recorded)
      throw ApplicationFailure.nonRetryable(
        `the API server Service of ${ref.namespace}/${ref.name} has the address ${ip}, not ${recorded} as when it was made ` +
          '(it was deleted and made again): its certificates and kubeconfigs name the old one',
        FailureType.InvalidSpec,
      );
    return ip;
  }

  /**
   * What the tenant's certificates are issued for. Pods call the API server at its host Service's
   * ClusterIP: that address must be a SAN. So must the node address it advertises: the
   * `kubernetes` Service's endpoint, and the host of its service-account JWKS URI.
   */
  async function pkiRequest(input: IssueCertificatesInput): Promise<ControlPlanePkiRequest> {
    const pods = inPods(input.allocation);
    // With pods the Service selects the API server's pod (the runtime sets it); the allocation's
    // address is its ClusterIP.
    const podAddress = pods
      ? await servedAt(input.ref, input.allocation.address)
      : network
        ? await network.apiService(input.ref, input.allocation.ports.apiserver)
        : undefined;
    const sans = pods ? podSANs(hostNamespace(input.ref), TENANT_API_SERVICE) : undefined;
    const exposed = await exposureAddress(input.ref, pods);
    return requestOf(input.allocation, {
      ...(input.spec.certSANs ? { certSANs: input.spec.certSANs } : {}),
      ...(podAddress ? { podAddress } : {}),
      ...(sans ? { sans } : {}),
      ...(exposed ? { exposed } : {}),
      ...(input.spec.certificates?.validity ? { validity: input.spec.certificates.validity } : {}),
    });
  }

  /**
   * The request from the tenant's addresses; with none, what a warm-pool slot is issued (a
   * tenant that claims it gets its leaves again only if it has some).
   */
  function requestOf(
    a: TenantAllocation,
    t: {
      certSANs?: string[];
      podAddress?: string;
      sans?: ReturnType<typeof podSANs>;
      exposed?: string;
      validity?: string;
    },
  ): ControlPlanePkiRequest {
    const { certSANs, podAddress, sans, exposed, validity } = t;
    return {
      clusterName: a.id,
      serviceCIDR: a.serviceCIDR,
      advertiseAddress: a.address,
      extraSANs: [
        ...(certSANs ?? []),
        ...(podAddress ? [podAddress] : []),
        ...(deps.nodeAddress ? [deps.nodeAddress] : []),
        ...(sans?.apiserver ?? []),
        ...(exposed && !certSANs?.includes(exposed) && exposed !== deps.nodeAddress ? [exposed] : []),
      ],
      ...(sans ? { etcdSANs: sans.etcd, clusterTreeSANs: sans.clusterTree } : {}),
      // Absent, not the default's value: the request's hash of an existing tenant stays the same.
      ...(validity ? { leafValidityMs: parseDuration(validity) } : {}),
    };
  }

  /**
   * A warm-pool slot's control plane, started by the same builders as the steps (their specs
   * equal, the steps adopt the processes), with a certificate set of its own.
   */
  async function startSlot(a: TenantAllocation, signal: AbortSignal): Promise<void> {
    const l = layout(a);
    await writeControlPlanePki(pkiDir(l), requestOf(a, {}));
    await writeKubeconfigs(l);
    await writeAuditPolicy(l);
    const programs = await bins();
    const p = placeOnMachine(l);
    if (deps.oneProcess) await ensureCurrentFiles(pkiDir(l));
    const joined = deps.oneProcess ? await one.builder(l) : undefined;
    const builders = joined
      ? [etcdSpec, joined]
      : [etcdSpec, apiserverSpec, controllerManagerSpec, schedulerSpec];
    for (const build of builders) {
      signal.throwIfAborted();
      if (build === controllerManagerSpec) await ensureCurrentFiles(pkiDir(l));
      const spec = build(p, programs);
      await deps.runtime.ensure(spec);
      // A stop of the pool does not wait for a component to be ready (the runtime's own stop ends it).
      await orCancelled(deps.runtime.waitReady(spec.owner, spec.name, readinessTimeoutMs), signal);
    }
  }

  /** The VirtualCluster's `spec.apiServer.expose` (immutable: read from the object). */
  async function exposureOf(ref: VirtualClusterRef): Promise<ApiServerExpose | undefined> {
    const expose = (await deps.host.getVirtualCluster(ref))?.spec.apiServer?.expose;
    return expose?.type === 'ClusterIP' ? undefined : expose;
  }

  /** Refuses an exposure this operator does not make (before anything of the tenant is made). */
  async function allowExposure(ref: VirtualClusterRef): Promise<void> {
    const expose = await exposureOf(ref);
    const allowed = deps.exposeTypes ?? ['NodePort', 'LoadBalancer'];
    if (expose && !allowed.includes(expose.type as 'NodePort' | 'LoadBalancer'))
      throw ApplicationFailure.nonRetryable(
        `spec.apiServer.expose ${expose.type} is not allowed by this operator (KOSMOS_VC_EXPOSE_TYPES=${allowed.join(',')})`,
        FailureType.InvalidSpec,
      );
  }

  /** The address an exposed API server is reached at from outside (a SAN); refused where it cannot be. */
  async function exposureAddress(ref: VirtualClusterRef, pods: boolean): Promise<string | undefined> {
    const expose = await exposureOf(ref);
    if (!expose) return undefined;
    if (!pods && !network)
      throw ApplicationFailure.nonRetryable(
        `spec.apiServer.expose ${expose.type} needs the API server's host Service, which this operator makes only with a node address (KOSMOS_VC_NODE_ADDRESS)`,
        FailureType.InvalidSpec,
      );
    return exposedAddress(expose, deps.nodeAddress);
  }

  async function publish(input: StepInput): Promise<{ secretName: string; endpoint: string }> {
    const l = await tenantFiles(input.ref, input.allocation);
    // Exposed, the kubeconfig names the address clients outside reach (its certificate does too).
    const server =
      (await exposedURL(deps.host, input.ref, await exposureOf(input.ref), deps.nodeAddress)) ??
      apiserverURL(l);
    const kubeconfig = await adminKubeconfig(l, input.ref.name, server);
    const secretName = kubeconfigSecretName(input.ref);
    await deps.host.applySecret(
      input.ref,
      secretName,
      { [KUBECONFIG_SECRET_KEY]: kubeconfig },
      {
        [LABELS.managedBy]: 'kosmos-vc',
        [LABELS.virtualCluster]: input.ref.name,
      },
    );
    await deps.host.patchSpecKubeconfig(input.ref, Buffer.from(kubeconfig).toString('base64'));
    return { secretName, endpoint: server };
  }

  const backups = createBackupActivities({
    host: deps.host,
    runtime: deps.runtime,
    binaries: bins,
    backupDir: deps.backupDir ?? join(deps.stateDir, 'backups'),
    tenantDir: (ref) => join(tenantsDir, tenantId(ref)),
    layoutOf: layout,
    storedPki: (ref) => pki.stored(ref),
    ...(deps.schedules ? { schedules: deps.schedules } : {}),
    logger: deps.logger,
  });

  const activities = withHeartbeats({
    ...clusterTree,
    ...createPromotionActivities(treeDeps),
    ...backups,
    ...allocation.activities,

    async issueCertificates(
      input: IssueCertificatesInput,
    ): Promise<CertificateState & { reissued: boolean }> {
      const l = layout(input.allocation);
      // A retry, here or on another worker, finds the set an earlier attempt stored. The request
      // (its addresses: a host Service for pods, the exposure) is made meanwhile.
      const [seen, request] = await both(pki.sync(input.ref, pkiDir(l)), pkiRequest(input));
      const result = await writeControlPlanePki(pkiDir(l), request, {
        commit: pki.commit(input.ref, seen),
      });
      await writeKubeconfigs(l);
      return { ...certificateState(result, input.spec.certificates), reissued: result.reissued };
    },

    /** When the tenant's certificates expire, from its files (a run from before renewal asks once). */
    async inspectCertificates(input: IssueCertificatesInput): Promise<CertificateState> {
      const l = await tenantFiles(input.ref, input.allocation);
      return certificateState(await certificateExpiry(pkiDir(l)), input.spec.certificates);
    },

    /**
     * Renews every leaf certificate, or starts or ends a CA rotation, while the tenant serves:
     * etcd and the API server read their new files themselves, and so do a controller-manager
     * and scheduler in one process with the API server (their kubeconfigs name the files; a
     * CA rotation's new bundle replaces the process); clusterTree, CoreDNS, and a
     * controller-manager and scheduler of their own (their client certificates sit in
     * kubeconfigs read once) are restarted if the runtime has them (running, or waiting to be
     * restarted). Then the renewed kubeconfig is published.
     */
    async renewCertificates(input: IssueCertificatesInput & CertificateAction): Promise<CertificateState> {
      refuseWithoutPods(input.ref, input.allocation);
      const l = layout(input.allocation);
      const seen = await pki.sync(input.ref, pkiDir(l));
      const overlap = parseDuration(input.spec.certificates?.caOverlap ?? CERTIFICATE_DEFAULTS.caOverlap);
      // The overlap's end is written into the set when the rotation starts (a retry keeps it).
      const opts: PkiOptions =
        input.action === 'rotateCA'
          ? {
              caRotation: {
                action: 'start',
                generation: input.generation,
                retiresAt: new Date(Date.now() + overlap).toISOString(),
              },
            }
          : input.action === 'retireCA'
            ? { caRotation: { action: 'retire' } }
            : { renew: true };
      let result;
      try {
        result = await writeControlPlanePki(pkiDir(l), await pkiRequest(input), {
          ...opts,
          commit: pki.commit(input.ref, seen),
        });
      } catch (e) {
        if (e instanceof CARotationInProgressError)
          throw ApplicationFailure.nonRetryable(e.message, FailureType.CARotationInProgress);
        if (e instanceof PkiMissingError)
          throw ApplicationFailure.nonRetryable(e.message, FailureType.PkiMissing);
        throw e;
      }
      await writeKubeconfigs(l);
      // clusterTree and CoreDNS run as the tenant's; its control plane, a claimed slot's too.
      const own = tenantId(input.ref);
      const running = new Set(
        [
          ...(await deps.runtime.list(input.allocation.id)),
          ...(own === input.allocation.id ? [] : await deps.runtime.list(own)),
        ].map((c) => c.name),
      );
      const restarted: string[] = [];
      // In one process the controller-manager and scheduler re-read their certificate files: the
      // process is ensured as it is, and restarts (seconds without an API) only when what they
      // read once changed (a CA rotation's bundle), or it was started by a version before that.
      const inOne = !inPods(input.allocation) && (await one.runs(input.allocation.id));
      if (inOne) {
        const was = await one.pid(input.allocation.id);
        const { pid } = await one.start(input, l);
        if (pid !== was) restarted.push('kube-apiserver', 'kube-controller-manager', 'kube-scheduler');
      }
      // Each is restarted by its new spec alone: the digest of the files it reads once (new
      // client certificates) is in it. Nothing is stopped first: a failed attempt leaves each
      // in the runtime (its process restarting, its pods rolling), so a retry, which decides by
      // what runs, restarts it again. CoreDNS's pods roll with no gap.
      for (const [name, spec] of [
        ['kube-controller-manager', controllerManagerSpec],
        ['kube-scheduler', schedulerSpec],
      ] as const) {
        if (inOne || !running.has(name)) continue;
        await startPlaced(input, spec, l, true);
        restarted.push(name);
      }
      if (running.has('clustertree') || running.has('coredns')) {
        await clusterTree.deployClusterTree(input);
        restarted.push('clustertree', 'coredns');
      }
      await publish(input);
      const state = certificateState(result, input.spec.certificates);
      log(input.ref).info('certificates renewed', {
        action: input.action,
        notAfter: state.notAfter,
        caFingerprint: state.caFingerprint,
        restarted,
      });
      return state;
    },

    async startEtcd(input: StepInput) {
      // The certificates can come from the Secret; the data cannot: a worker without the
      // tenant's directory would start an empty etcd. Another worker may have it: retried.
      // Checked first, so such a worker writes none of the tenant's files either.
      const allocated = join(layout(input.allocation).dir, ALLOCATION_FILE);
      if (!inPods(input.allocation) && !existsSync(allocated))
        throw new Error(
          `this worker's machine has no data of ${input.ref.namespace}/${input.ref.name} (no ${allocated}): ` +
            'with the process runtime every worker of a tenant shares one machine and state directory (ADR 2)',
        );
      const l = await tenantFiles(input.ref, input.allocation);
      return startPlaced(input, etcdSpec, l);
    },
    async startApiserver(input: StepInput) {
      const l = await tenantFiles(input.ref, input.allocation);
      // Pods keep no audit log this worker reads: such a tenant is never found idle (not audited).
      if (inPods(input.allocation)) return startPlaced(input, apiserverSpec, l);
      await writeAuditPolicy(l);
      stopListening(l.id); // a wait for the first request that was not cancelled yet
      let started;
      try {
        started = one.joins(input.allocation)
          ? await one.start(input, l)
          : await startPlaced(input, apiserverSpec, l);
      } catch (e) {
        // Started beside etcd (ADR 12, decision 22), an API server gives up on an etcd that does
        // not serve within 20 s: while etcd is still starting, that is no answer, and the step's
        // next attempt starts it again (a cancelled step has no next attempt).
        const ctx = currentContext();
        // Cancelled for etcd's failure (together): reported as cancelled, the step then undone.
        if (ctx?.cancellationDetails?.cancelRequested) throw ctx.cancellationSignal.reason as Error;
        if (
          e instanceof ApplicationFailure &&
          e.type === FailureType.ComponentExited &&
          !(await etcdServes(l))
        )
          throw ApplicationFailure.retryable(
            `${e.message} (etcd was not serving yet)`,
            FailureType.ComponentExited,
            ...(e.details ?? []),
          );
        throw e;
      }
      // The request that woke an idle tenant waited for this.
      const passed = releaseHeldConnections(l.id, l.address, l.ports.apiserver);
      if (passed > 0) log(input.ref).info('held requests passed on', { count: passed });
      return started;
    },

    /**
     * When the last request of a user or workload reached the tenant (its audit log); null: none
     * yet. `audited` false: its API server was started by a version without the audit log (it
     * gets one when it next starts), so nothing can be told.
     */
    async lastTenantRequest(input: StepInput): Promise<{ at: string | null; audited: boolean }> {
      const l = layout(input.allocation);
      // startApiserver writes the policy before it starts an API server that audits.
      const audited = existsSync(join(auditDir(l), 'policy.yaml'));
      return { at: (await lastAuditedRequest(auditLogPath(l))) ?? null, audited };
    },

    /**
     * While an idle tenant sleeps: resolves at the first connection to its API server's port
     * (held and passed on once the API server is back). Runs until then; cancelled on any other
     * wake-up.
     */
    async awaitTenantRequest(input: StepInput & { announce?: StatusReport }): Promise<{ at: string }> {
      const l = layout(input.allocation);
      const { announce } = input;
      return awaitFirstConnection({
        owner: l.id,
        host: l.bindAddress ?? l.address,
        port: l.ports.apiserver,
        logger: log(input.ref),
        // The workflow's Idle status, written once a client that reads it can connect.
        ...(announce ? { onListening: (ended) => announceStatus(input.ref, announce, ended) } : {}),
      });
    },
    async startControllerManager(input: StepInput) {
      const files = () => tenantFiles(input.ref, input.allocation);
      if (await one.serves(input.allocation))
        return one.served(input, controllerManagerSpec, layout(input.allocation), files);
      const l = await files();
      await ensureCurrentFiles(pkiDir(l));
      return startPlaced(input, controllerManagerSpec, l);
    },
    async startScheduler(input: StepInput) {
      const files = () => tenantFiles(input.ref, input.allocation);
      if (await one.serves(input.allocation))
        return one.served(input, schedulerSpec, layout(input.allocation), files);
      return startPlaced(input, schedulerSpec, await files());
    },

    async stopComponent(input: { ref: VirtualClusterRef; component: ControlPlaneComponent }): Promise<void> {
      await deps.runtime.stop(await controlPlaneOwner(input.ref), input.component);
    },

    /** Writes the admin kubeconfig to a Secret and to spec.kubeconfig. */
    publishKubeconfig: publish,

    async unpublishKubeconfig(input: { ref: VirtualClusterRef }): Promise<void> {
      await deps.host.deleteSecret(input.ref.namespace, kubeconfigSecretName(input.ref));
      await deps.host.patchSpecKubeconfig(input.ref, null);
    },

    /** Writes status; a VirtualCluster that is already gone is not an error. */
    async reportStatus(input: { ref: VirtualClusterRef; status: StatusReport }): Promise<void> {
      const ok = await deps.host.patchStatus(input.ref, input.status);
      if (!ok) log(input.ref).debug('status not written: object gone', { phase: input.status.phase });
    },
  });
  return { activities, ...(allocation.warmPool ? { warmPool: allocation.warmPool } : {}) };
}

export type Activities = ReturnType<typeof createActivities>;
