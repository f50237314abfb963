/**
 * Helpers for integration tests: an operator per test file on its own task queue and state
 * directory, VirtualClusters in a namespace of the file's own, and waits with clear timeouts.
 */
import { CoreV1Api, KubeConfig, type V1Toleration } from '@kubernetes/client-node';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { inject } from 'vitest';
import {
  API_VERSION,
  GROUP,
  KIND,
  PLURAL,
  VERSION,
  VirtualCluster,
  type Phase,
  type VirtualClusterRef,
} from '../../src/api/virtualCluster.js';
import { merge } from '../../src/api/kubeClient.js';
import { HostCluster } from '../../src/activities/hostCluster.js';
import { repoRoot, resolveBinaries, type Binaries } from '../../src/runtime/binaries.js';
import { kwokNode } from '../../src/runtime/embedded.js';
import { OPERATOR_NODE_ENV, OPERATOR_NODE_FLAGS } from '../../src/runtime/nodeFlags.js';
import { NodeNet } from '../../src/node/realNode.js';
import { createLogger } from '../../src/worker/logger.js';
import { startOperator, type Operator } from '../../src/worker/operator.js';
import type { ComponentStatus } from '../../src/runtime/types.js';

export const run = promisify(execFile);

/**
 * The built `kosmos-vc` command line against the test host cluster, with `env` added (the
 * Temporal address, task queue or state directory of a test's operator, for the commands that
 * need them). Resolves with what it printed; rejects as execFile does (code, stderr).
 */
export async function kosmosVc(args: string[], env: Record<string, string> = {}): Promise<string> {
  const kubeconfig = process.env.KVC_HOST_KUBECONFIG ?? inject('hostKubeconfig');
  const { stdout } = await run(
    process.execPath,
    [...OPERATOR_NODE_FLAGS, join(repoRoot(), 'dist', 'src', 'cli', 'main.js'), ...args],
    {
      env: { ...process.env, ...OPERATOR_NODE_ENV, KUBECONFIG: kubeconfig, ...env },
      timeout: 300_000,
    },
  );
  return stdout;
}

export function hostKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(inject('hostKubeconfig'));
  return kc;
}

export const host = (): HostCluster => new HostCluster(hostKubeConfig());

export async function newStateDir(): Promise<string> {
  return mkdtemp(join(inject('stateRoot'), 'operator-'));
}

export const testLogger = createLogger({ level: (process.env.LOG_LEVEL as 'debug' | undefined) ?? 'warn' });

export async function testOperator(opts: {
  stateDir: string;
  taskQueue: string;
  namespace: string;
  worker?: boolean;
  watcher?: boolean;
  binaries?: Partial<Binaries>;
  allowPrivilegedTenants?: boolean;
  /** New tenants' control planes as pods on the real node (ADR 14). */
  pods?: boolean;
  exposeTypes?: readonly ('NodePort' | 'LoadBalancer')[];
  /** The pods' tolerations (default: every taint, as the embedded host's). */
  podTolerations?: V1Toleration[];
  /** false: a clusterTree process per tenant (default: one shared, ADR 12 decision 13). */
  sharedClusterTree?: boolean;
  /** Control planes started ahead for new tenants (ADR 12, decision 15). */
  warmPool?: { size: number; refillDelayMs?: number };
  /**
   * false: a tenant's API server, controller-manager and scheduler as processes of their own
   * (default: the operator's, one process for the three; ADR 12, decisions 16 and 21).
   */
  oneProcess?: boolean;
}): Promise<Operator> {
  const binaries = { ...(await resolveBinaries()), ...opts.binaries };
  return startOperator({
    kubeconfigPath: inject('hostKubeconfig'),
    temporalAddress: inject('temporalAddress'),
    temporalNamespace: 'default',
    taskQueue: opts.taskQueue,
    stateDir: opts.stateDir,
    logger: testLogger,
    readinessTimeoutMs: 60_000,
    etcdUnsafeNoFsync: true,
    relistIntervalMs: 5_000,
    binaries,
    watchNamespace: opts.namespace,
    // The status pass of configurations without nodeHealthFromHost every 2 s: a tenant with it
    // that ran the pass anyway would show it inside any test's window (ADR 12, decision 20).
    clusterTree: { heartbeatIntervalMs: 2_000, nodeStatusIntervalMs: 2_000, resyncIntervalMs: 5_000 },
    promotionRetryMs: 2_000,
    metrics: { host: '127.0.0.1', port: 0 },
    ...(inject('nodeAddress') ? { nodeAddress: inject('nodeAddress'), podCIDR: NodeNet.clusterCIDR } : {}),
    ...(inject('nodeAddress') && binaries.node ? { hostsImage: binaries.node.toolsImage } : {}),
    ...(opts.worker === false ? { worker: false } : {}),
    ...(opts.watcher === false ? { watcher: false } : {}),
    ...(opts.allowPrivilegedTenants ? { allowPrivilegedTenants: true } : {}),
    ...(opts.exposeTypes ? { exposeTypes: opts.exposeTypes } : {}),
    ...(opts.sharedClusterTree !== undefined ? { sharedClusterTree: opts.sharedClusterTree } : {}),
    ...(opts.warmPool ? { warmPool: opts.warmPool } : {}),
    ...(opts.oneProcess !== undefined ? { oneProcess: opts.oneProcess } : {}),
    ...(opts.pods
      ? {
          pods: {
            nodeSelector: { 'kubernetes.io/hostname': inject('realNode') },
            tolerations: opts.podTolerations ?? [{ operator: 'Exists' }],
            pollMs: 250,
          },
        }
      : {}),
  });
}

/**
 * A tenant's clusterTree as the worker's runtime lists it, when it runs: in the worker's shared
 * process (by default; its command line names no tenant's directory) or a process of its own
 * (ADR 12, decision 13).
 */
export async function runningClusterTree(
  operator: Operator,
  tenant: string,
): Promise<ComponentStatus | undefined> {
  return (await operator.runtime!.list(tenant)).find((c) => c.name === 'clustertree' && c.running);
}

export async function createNamespace(prefix: string): Promise<string> {
  const name = `${prefix}-${randomUUID().slice(0, 6)}`;
  await hostKubeConfig()
    .makeApiClient(CoreV1Api)
    .createNamespace({ body: { metadata: { name } } });
  return name;
}

export async function createVirtualCluster(
  namespace: string,
  name: string,
  spec: Record<string, unknown> = {},
): Promise<VirtualCluster> {
  const created: unknown = await host().custom.createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    plural: PLURAL,
    namespace,
    body: { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace }, spec },
  });
  return VirtualCluster.parse(created);
}

/** Sets a VirtualCluster's spec.sleep (a merge patch, as `kubectl patch --type=merge`). */
export async function setSleep(namespace: string, name: string, on: boolean): Promise<void> {
  await host().custom.patchNamespacedCustomObject(
    { group: GROUP, version: VERSION, plural: PLURAL, namespace, name, body: { spec: { sleep: on } } },
    merge,
  );
}

export async function deleteVirtualCluster(namespace: string, name: string): Promise<void> {
  await host().custom.deleteNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    plural: PLURAL,
    namespace,
    name,
  });
}

/** Thrown inside an `eventually` callback to stop waiting at once. */
export class GiveUp extends Error {
  override readonly name = 'GiveUp';
}

export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
      last = undefined;
    } catch (e) {
      if (e instanceof GiveUp) throw e;
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs / 1000}s waiting for ${what}${last ? `: ${last instanceof Error ? last.message : JSON.stringify(last)}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function waitForPhase(
  namespace: string,
  name: string,
  phase: Phase,
  timeoutMs = 120_000,
): Promise<VirtualCluster> {
  let seen = 'nothing';
  try {
    return await eventually(
      `${namespace}/${name} to reach ${phase}`,
      async () => {
        const vc = await host().getVirtualCluster({ namespace, name });
        seen = `${vc?.status?.phase}: ${vc?.status?.message}`;
        if (phase !== 'Failed' && vc?.status?.phase === 'Failed')
          throw new GiveUp(`it failed: ${vc.status.message}`);
        return vc?.status?.phase === phase ? vc : undefined;
      },
      timeoutMs,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message} (last seen ${seen})`);
  }
}

export async function waitForGone(namespace: string, name: string, timeoutMs = 120_000): Promise<void> {
  await eventually(
    `${namespace}/${name} to be deleted`,
    async () => (await host().getVirtualCluster({ namespace, name })) === undefined,
    timeoutMs,
  );
}

export async function kubectl(kubeconfig: string, ...args: string[]): Promise<string> {
  const { kubectl: bin } = await resolveBinaries();
  const { stdout } = await run(bin, ['--kubeconfig', kubeconfig, ...args], { timeout: 30_000 });
  return stdout;
}

/** Every live process whose command line mentions `needle`, by executable name. */
export function processesMentioning(needle: string): { pid: number; exe: string }[] {
  const out: { pid: number; exe: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(needle)))
        out.push({ pid: Number(entry), exe: (argv[0] ?? '').split('/').at(-1) ?? '' });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

export function pathExists(p: string): boolean {
  return existsSync(p);
}

export interface Credentials {
  server: string;
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** The server, CA and client certificate of a kubeconfig's current context. */
export function credentialsOf(kubeconfigText: string): Credentials {
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigText);
  const dec = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString();
  return {
    server: kc.getCurrentCluster()!.server,
    caPem: dec(kc.getCurrentCluster()!.caData),
    certPem: dec(kc.getCurrentUser()!.certData),
    keyPem: dec(kc.getCurrentUser()!.keyData),
  };
}

/**
 * GET `path` on `server` (trusting `serverCaPem`) presenting `client`'s certificate: the status
 * code the server answers, so a test can see a foreign credential rejected by the server itself.
 */
export async function statusAs(
  server: string,
  serverCaPem: string,
  client: Pick<Credentials, 'certPem' | 'keyPem'>,
  path = '/api/v1/namespaces',
): Promise<number> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(
      `${server}${path}`,
      { ca: serverCaPem, cert: client.certPem, key: client.keyPem, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Simulated host nodes (kwok manages them): Ready, 32 CPU / 256Gi, optional extra labels. */
export async function createKwokNodes(names: string[], labels: Record<string, string> = {}): Promise<void> {
  const core = hostKubeConfig().makeApiClient(CoreV1Api);
  for (const name of names)
    await core.createNode({
      body: kwokNode(name, { labels, capacity: { cpu: '32', memory: '256Gi', pods: '110' } }),
    });
}

export async function deleteNodes(names: string[]): Promise<void> {
  const core = hostKubeConfig().makeApiClient(CoreV1Api);
  for (const name of names) await core.deleteNode({ name }).catch(() => undefined);
}

/** The identity of a VirtualCluster as the API server returned it. */
export const refOf = (vc: VirtualCluster): VirtualClusterRef => ({
  namespace: vc.metadata.namespace,
  name: vc.metadata.name,
  uid: vc.metadata.uid,
});

/** Writes a VirtualCluster's admin kubeconfig (spec.kubeconfig) to a file for kubectl. */
export async function tenantKubeconfig(dir: string, vc: VirtualCluster): Promise<string> {
  const file = join(dir, `${vc.metadata.namespace}-${vc.metadata.name}.kubeconfig`);
  await writeFile(file, Buffer.from(vc.spec.kubeconfig ?? '', 'base64'), { mode: 0o600 });
  return file;
}

export function tenantCore(kubeconfigFile: string): CoreV1Api {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigFile);
  return kc.makeApiClient(CoreV1Api);
}

const cliEntry = join(repoRoot(), 'dist', 'src', 'cli', 'main.js');

/**
 * A `kosmos-vc worker` process against the test host and Temporal, with `stateDir` and `taskQueue`
 * and more environment; its output goes to `<stateDir>/worker-<label>.log`.
 */
export function spawnWorker(
  stateDir: string,
  label: string,
  taskQueue: string,
  env: Record<string, string> = {},
): ChildProcess {
  if (!existsSync(cliEntry)) throw new Error(`${cliEntry} is missing: run \`npm run build\` (npm test does)`);
  const log = openSync(join(stateDir, `worker-${label}.log`), 'a');
  // Started as the kosmos-vc command starts itself (its shebang).
  return spawn(process.execPath, [...OPERATOR_NODE_FLAGS, cliEntry, 'worker'], {
    stdio: ['ignore', log, log],
    env: {
      ...OPERATOR_NODE_ENV,
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      KUBECONFIG: inject('hostKubeconfig'),
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      KOSMOS_VC_STATE_DIR: stateDir,
      KOSMOS_VC_TASK_QUEUE: taskQueue,
      LOG_FORMAT: 'json',
      ...env,
    },
  });
}

/** Stops a worker process: SIGTERM, then SIGKILL after 30 s; nothing when it has exited. */
export async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
