/**
 * Stand-ins for the real activities: they record every call, can be told to fail a step
 * permanently, and can hold a step until the test lets it go.
 */
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Activities } from '../../src/activities/index.js';
import type { CertificateState, StatusReport, TenantAllocation } from '../../src/activities/types.js';
import type { StepName } from '../../src/workflows/definitions.js';

export interface StubControl {
  calls: string[];
  statuses: StatusReport[];
  /** The statuses among them that awaitTenantRequest wrote once it listened (its `announce`). */
  announced?: StatusReport[];
  /** A step name, 'sleepTenant', or `renewCertificates:<action>`. */
  failAt?:
    | StepName
    | 'sleepTenant'
    | `renewCertificates:${'renew' | 'rotateCA' | 'retireCA'}`
    | `restoreBackup:${string}`
    | undefined;
  /** Steps that throw a retryable error this many times before they succeed. */
  transient?: Map<string, number>;
  /** Steps that wait for `release(step)` before they finish. */
  holds: Map<string, { reached: Promise<void>; release: () => void }>;
  /** Nodes promoteResources reports as NodeNotFound (the test adds and removes them). */
  missingNodes?: Set<string>;
  /** How long after an issue or renewal the next renewal falls due (default: a year). */
  renewInMs?: number;
  /** How long a started CA rotation overlaps (default: an hour). */
  caOverlapMs?: number;
  caRotation?: number;
  overlapUntil?: string | undefined;
  /** What lastTenantRequest answers. */
  lastRequestAt?: string;
  /** issueCertificates answers as it did before certificate renewal existed. */
  resultsWithoutExpiry?: boolean;
  /** The input of each deployClusterTree call, in order. */
  treeInputs?: unknown[];
  /** allocate places the control plane in pods (ADR 14) rather than processes. */
  inPods?: boolean;
  /** How long a status write takes. */
  statusWriteMs?: number;
}

/** Certificate expiry as the real activities report it, `renewInMs` from now. */
function certificates(control: StubControl, caRotation: number): CertificateState {
  const now = Date.now();
  const renewIn = control.renewInMs ?? 365 * 24 * 3_600_000;
  return {
    notAfter: new Date(now + 2 * renewIn).toISOString(),
    renewAt: new Date(now + renewIn).toISOString(),
    caNotAfter: new Date(now + 3650 * 24 * 3_600_000).toISOString(),
    caFingerprint: `ca-${caRotation}`,
    caRotation,
  };
}

export function hold(
  control: StubControl,
  step: StepName | 'awaitTenantRequest',
): { reached: Promise<void>; release: () => void } {
  let release!: () => void;
  let reachedResolve!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const reached = new Promise<void>((r) => (reachedResolve = r));
  const entry = { reached, release, gate, reachedResolve };
  control.holds.set(step, entry);
  return { reached, release };
}

export function stubActivities(control: StubControl): Activities {
  const allocation: TenantAllocation = {
    id: 'ns-vc-00000000',
    dir: '/nonexistent/ns-vc-00000000',
    address: '127.0.0.1',
    ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
    serviceCIDR: '10.96.0.0/12',
  };
  const step = async <T>(name: string, result: T): Promise<T> => {
    control.calls.push(name);
    const h = control.holds.get(name) as unknown as
      { gate: Promise<void>; reachedResolve: () => void } | undefined;
    if (h) {
      h.reachedResolve();
      // A held step heartbeats, so that a cancellation reaches it (recorded as `cancelled:<name>`).
      const ctx = Context.current();
      const beat = setInterval(() => ctx.heartbeat(), 200);
      try {
        await Promise.race([h.gate, ctx.cancelled]);
      } catch (e) {
        control.calls.push(`cancelled:${name}`);
        throw e;
      } finally {
        clearInterval(beat);
      }
    }
    if (control.failAt === name)
      throw ApplicationFailure.nonRetryable(`${name} failed on purpose`, 'ComponentExited');
    const left = control.transient?.get(name) ?? 0;
    if (left > 0) {
      control.transient!.set(name, left - 1);
      throw new Error(`${name} hit a transient error`);
    }
    return result;
  };
  return {
    allocate: () =>
      step('allocate', control.inPods ? { ...allocation, runtime: 'kubernetes' as const } : allocation),
    release: () => Promise.resolve(void control.calls.push('release')),
    issueCertificates: () =>
      step(
        'issueCertificates',
        // What the activity returned before renewal existed: no expiry.
        control.resultsWithoutExpiry
          ? ({ caFingerprint: 'x', reissued: true } as unknown as CertificateState & { reissued: boolean })
          : { ...certificates(control, 0), reissued: true },
      ),
    inspectCertificates: () => step('inspectCertificates', certificates(control, 0)),
    renewCertificates: (input) => {
      // As the real set: the overlap's end is recorded when a rotation starts, kept by a renewal
      // during it, and gone with the retirement.
      if (input.action === 'rotateCA' && control.caRotation !== input.generation) {
        control.caRotation = input.generation;
        control.overlapUntil = new Date(Date.now() + (control.caOverlapMs ?? 3_600_000)).toISOString();
      }
      if (input.action === 'retireCA') control.overlapUntil = undefined;
      return step(`renewCertificates:${input.action}`, {
        ...certificates(control, control.caRotation ?? 0),
        ...(control.overlapUntil
          ? { previousCAFingerprint: 'old', previousCARetiresAt: control.overlapUntil }
          : {}),
      });
    },
    startEtcd: () => step('startEtcd', { pid: 1 }),
    startApiserver: () => step('startApiserver', { pid: 2 }),
    startControllerManager: () => step('startControllerManager', { pid: 3 }),
    startScheduler: () => step('startScheduler', { pid: 4 }),
    stopComponent: ({ component }) => Promise.resolve(void control.calls.push(`stop:${component}`)),
    publishKubeconfig: () =>
      step('publishKubeconfig', { secretName: 'vc-kubeconfig', endpoint: 'https://127.0.0.1:3' }),
    unpublishKubeconfig: () => Promise.resolve(void control.calls.push('unpublishKubeconfig')),
    deployClusterTree: (input) => {
      control.treeInputs?.push(input);
      return step('deployClusterTree', { hostNamespace: 'kvc-ns-vc-0000000000', pid: 5 });
    },
    removeClusterTree: () => Promise.resolve(void control.calls.push('removeClusterTree')),
    sleepTenant: () => step('sleepTenant', undefined),
    backupTenant: ({ ref, kind }) =>
      step(`backupTenant:${kind}`, {
        backup: `${ref.name}/${kind}-x.tar.gz`,
        file: `/nonexistent/${ref.name}/${kind}-x.tar.gz`,
        size: 1,
        sha256: '0'.repeat(64),
        createdAt: new Date().toISOString(),
      }),
    restoreBackup: ({ backup }) =>
      step(`restoreBackup:${backup}`, { source: 'ns/old', createdAt: new Date().toISOString() }),
    lastTenantRequest: () => step('lastTenantRequest', { at: control.lastRequestAt ?? null, audited: true }),
    // Heartbeats and honours cancellation, as the real one (the workflow waits for it to stop).
    awaitTenantRequest: async ({ announce }) => {
      control.calls.push('awaitTenantRequest');
      const ctx = Context.current();
      // Listening now: the status the workflow left to the listener is written.
      if (announce) {
        control.statuses.push(announce);
        (control.announced ??= []).push(announce);
      }
      const h = control.holds.get('awaitTenantRequest') as unknown as
        { gate: Promise<void>; reachedResolve: () => void } | undefined;
      h?.reachedResolve();
      const beat = setInterval(() => ctx.heartbeat(), 200);
      try {
        await Promise.race([h?.gate ?? Promise.resolve(), ctx.cancelled]);
        return { at: new Date().toISOString() };
      } catch (e) {
        control.calls.push('awaitTenantRequest:cancelled');
        throw e;
      } finally {
        clearInterval(beat);
      }
    },
    ensureBackupSchedule: ({ backup }) =>
      step(`ensureBackupSchedule:${backup ? backup.schedule : 'none'}`, undefined),
    promoteResources: ({ promote }) => {
      const named = promote?.nodes ?? [];
      const missing = named.filter((n) => control.missingNodes?.has(n));
      const nodes = named.filter((n) => !control.missingNodes?.has(n)).sort();
      return step('promoteResources', {
        nodes,
        pending: missing.map((node) => ({
          node,
          reason: 'NodeNotFound' as const,
          message: `${node} missing`,
        })),
        demoted: [],
        virtualNode: promote?.resources ? 'kosmos-virtual-resources' : null,
        capacity: { cpu: String(nodes.length * 32), memory: `${nodes.length * 256}Gi` },
      });
    },
    demoteAll: () => Promise.resolve(void control.calls.push('demoteAll')),
    reportStatus: async ({ status }) => {
      if (control.statusWriteMs) await new Promise((r) => setTimeout(r, control.statusWriteMs));
      control.statuses.push(status);
    },
  };
}
