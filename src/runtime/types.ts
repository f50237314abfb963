/**
 * How a control plane's components run. Activities call this interface and nothing below it,
 * so a runtime that runs components as workloads in the host cluster can replace the process
 * runtime without touching workflows (docs/adr/0002-control-plane-runtime.md).
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../worker/logger.js';

export type ComponentName =
  | 'etcd'
  | 'kube-apiserver'
  | 'kube-controller-manager'
  | 'kube-scheduler'
  | 'kwok'
  | 'temporal'
  | 'clustertree'
  | 'coredns'
  | 'registry'
  | 'local-path-provisioner'
  | 'containerd'
  | 'kubelet'
  | 'kube-proxy';

/** An HTTP(S) endpoint that answers 200 once the component is ready. */
export interface HttpsProbe {
  url: string;
  /** Required for https URLs: the CA that signed the component's serving certificate. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * Files a component reads, from one source, in the directory its arguments name: the tenant's
 * certificate set (its Secret, ADR 14), the kubeconfigs rendered from it, or the audit policy.
 */
export interface FileSet {
  /** clustertree, coredns: their configuration and kubeconfig for the tenant (the activities write both). */
  source: 'pki' | 'kubeconfigs' | 'audit-policy' | 'clustertree' | 'coredns';
  path: string;
  /** The files it reads there, relative to `path` (`etcd/ca.crt`): a runtime of pods mounts these alone. */
  keys: readonly string[];
}

export interface ComponentSpec {
  /** The control plane the component belongs to: a tenant id, or "host". */
  owner: string;
  name: ComponentName;
  /** The program, where the component runs (a path of this machine, or in its image). */
  command: string;
  args: readonly string[];
  env?: Readonly<Record<string, string>>;
  probe?: HttpsProbe;
  /**
   * What a runtime that does not share this machine's files must provide (ADR 14); the process
   * runtime finds them in place. Not part of what identifies a running process: a spec that
   * gains them restarts nothing.
   */
  files?: readonly FileSet[];
  /** Directories the component writes and keeps across restarts (etcd's data, the audit log). */
  writes?: readonly string[];
  /** The ports it listens on, by name. */
  ports?: Readonly<Record<string, number>>;
  /** A runtime of pods: the host namespace it runs in (the process runtime ignores it). */
  namespace?: string;
  /**
   * A runtime of pods: the Service others reach it through, on `port`, to the port of `ports`
   * with that number, else the first (`udp`: over UDP as well, CoreDNS's; `direct`: also on that
   * port's own number, the API server's advertised endpoint); headless for etcd, whose peers and
   * clients find the pod by name.
   */
  service?: { name: string; port?: number; headless?: boolean; udp?: boolean; direct?: boolean };
  /**
   * What a kubelet may probe without credentials (`ready`, then `live` to restart it, on
   * `livePort` where it has its own); the runtime's own `probe` follows with the component's
   * client certificate.
   */
  health?: { scheme: 'HTTP' | 'HTTPS'; port: number; ready: string; live: string; livePort?: number };
  /**
   * A runtime of pods: the service account of the namespace the pod runs as, its token mounted
   * (clusterTree's host identity); without, a pod holds no credential of the host.
   */
  serviceAccount?: string;
  /**
   * A runtime of pods: the NoSchedule taint its pods tolerate besides the runtime's tolerations
   * (the tenant's own promotion taint: a node promoted to the tenant still takes back its
   * control plane's pods).
   */
  tolerates?: { key: string; value: string };
}

export interface ComponentStatus {
  owner: string;
  name: ComponentName;
  running: boolean;
  pid?: number;
  /** Restarts by the supervisor since this runtime took the component over (of its containers, with pods). */
  restarts: number;
  /** A process that serves several owners (a shared clusterTree): how many; its memory and CPU are theirs together. */
  sharedBy?: number;
  /** The program a process runs (the process runtime): kube-control-plane for an API server with its two peers in it. */
  command?: string;
}

export interface ControlPlaneRuntime {
  /** Starts the component unless an identical one already runs (then it is adopted). */
  ensure(spec: ComponentSpec): Promise<ComponentStatus>;
  /**
   * Resolves when the probe answers 200; rejects with ComponentExitedError or ReadinessTimeoutError,
   * or with `signal`'s reason once it aborts (the process runtime stops probing then).
   */
  waitReady(owner: string, name: ComponentName, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  /** Stops the component and forgets it; a no-op when it is not there. */
  stop(owner: string, name: ComponentName): Promise<void>;
  /** Stops every component of `owner` and removes the runtime's records and logs of it. */
  remove(owner: string): Promise<void>;
  list(owner?: string): Promise<ComponentStatus[]>;
  /** Re-attaches to, or restarts, every component recorded as wanted (after a restart). */
  resume(): Promise<ComponentStatus[]>;
  /** Stops every process but keeps the records, so resume() brings them back. */
  shutdown(): Promise<void>;
  /** The last lines of a component's log, for error messages. */
  logTail(owner: string, name: ComponentName, lines?: number): Promise<string>;
}

/**
 * The env a component that reads `files` once at its start carries: their digest. New files (a
 * renewal's certificates) make a new spec, which the runtime restarts or rolls in place, recorded
 * under its lock: a retry or another worker finishes what an attempt began, and nothing is
 * stopped first and forgotten.
 */
export function filesDigestEnv(files: Readonly<Record<string, string>>): Record<string, string> {
  return {
    [FILES_DIGEST_ENV]: createHash('sha256').update(JSON.stringify(files)).digest('hex').slice(0, 16),
  };
}

export const FILES_DIGEST_ENV = 'KOSMOS_VC_CONFIG_HASH';

/** Starts (or adopts) a component and waits until it is ready, logging how long that took. */
export async function startAndWait(
  runtime: ControlPlaneRuntime,
  spec: ComponentSpec,
  timeoutMs: number,
  logger: Logger,
): Promise<void> {
  const t0 = Date.now();
  await runtime.ensure(spec);
  await runtime.waitReady(spec.owner, spec.name, timeoutMs);
  logger.info(`${spec.name} ready`, { owner: spec.owner, ms: Date.now() - t0 });
}

export class ComponentExitedError extends Error {
  override readonly name = 'ComponentExitedError';
  constructor(
    readonly owner: string,
    readonly component: ComponentName,
    readonly exitCode: number | null,
    readonly logTail: string,
  ) {
    super(
      `${component} exited${exitCode === null ? '' : ` with code ${exitCode}`} before it was ready: ${lastMeaningfulLine(logTail)}`,
    );
  }
}

export class ReadinessTimeoutError extends Error {
  override readonly name = 'ReadinessTimeoutError';
  constructor(
    readonly owner: string,
    readonly component: ComponentName,
    readonly timeoutMs: number,
    readonly lastProbeError: string,
  ) {
    super(
      `${component} was not ready after ${Math.round(timeoutMs / 1000)}s (last probe: ${lastProbeError})`,
    );
  }
}

/** The line of a log tail most likely to say why a process died. */
export function lastMeaningfulLine(tail: string): string {
  const lines = tail
    .split('\n')
    // klog's header (`E1124 09:07:19.445388    4603 run.go:72] `) says nothing to a user.
    .map((l) => l.replace(/^[IWEF][0-9]{4} [0-9:.]+\s+[0-9]+ [^\]]+\] /, '').trim())
    .filter(Boolean);
  const fatal = [...lines].reverse().find((l) => /\b(error|fatal|failed|invalid|unable|panic)\b/i.test(l));
  return (fatal ?? lines.at(-1) ?? 'no output').slice(0, 600);
}
