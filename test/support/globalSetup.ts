/**
 * Starts the real servers the integration tests share, once per run: a Temporal dev server
 * (in memory, headless) and the embedded host cluster (etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler, kwok). Everything is stopped by PID at the end.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { HostCluster } from '../../src/activities/hostCluster.js';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import { startEmbeddedHost, startTemporalDevServer } from '../../src/runtime/embedded.js';
import { PortAllocator } from '../../src/runtime/ports.js';
import { ProcessRuntime } from '../../src/runtime/processRuntime.js';
import type { ComponentSpec } from '../../src/runtime/types.js';
import { NodeNet, OWNER, stopRealNode } from '../../src/node/realNode.js';

const run = promisify(execFile);
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger, type Logger } from '../../src/worker/logger.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    /** The dev server's Web UI (http://127.0.0.1:port). */
    temporalUiUrl: string;
    hostKubeconfig: string;
    stateRoot: string;
    /** The real node's address where one runs ('' with kwok nodes only). */
    nodeAddress: string;
    realNode: string;
  }
}

const PREFIX = 'kvc-test-';
export const CONTINUE_AS_NEW_AFTER_EVENTS = 150;

/**
 * A run that was killed before its teardown leaves its processes running: stop them through
 * their runtime records (pid and start time checked), then remove the directory.
 */
async function reapInterruptedRuns(logger: Logger): Promise<void> {
  for (const entry of await readdir(tmpdir())) {
    if (!entry.startsWith(PREFIX)) continue;
    const root = join(tmpdir(), entry);
    // Another run still in progress owns its directory: leave it alone.
    const owner = Number(await readFile(join(root, 'owner.pid'), 'utf8').catch(() => '0'));
    if (owner > 0 && isAlive(owner)) continue;
    const runtimeRoots = [join(root, 'embedded')];
    for (const sub of await readdir(root).catch(() => [] as string[])) {
      if (sub.startsWith('operator-')) runtimeRoots.push(join(root, sub, 'runtime'));
    }
    for (const runtimeRoot of runtimeRoots) {
      const runtime = new ProcessRuntime({ root: runtimeRoot, logger, stopGraceMs: 5_000 });
      // A real node left running: its pods, mounts and network go first, through containerd.
      const record = await readFile(join(runtimeRoot, OWNER, 'containerd.json'), 'utf8').catch(
        () => undefined,
      );
      const b = record ? (await resolveBinaries()).node : undefined;
      if (record && b)
        await stopRealNode(runtime, b, join(root, 'host', 'node'), logger, {
          containerd: (JSON.parse(record) as { spec: ComponentSpec }).spec,
        });
      for (const owner of await readdir(runtimeRoot).catch(() => [] as string[])) await runtime.remove(owner);
      runtime.detach();
    }
    await rm(root, { recursive: true, force: true });
    logger.warn('removed the leftovers of an interrupted test run', { root });
  }
}

/** Live processes whose command line mentions `dir` ("pid exe"). */
function leftovers(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(dir))) out.push(`${entry} ${argv[0] ?? ''}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const logger = createLogger({ level: process.env.LOG_LEVEL === 'debug' ? 'debug' : 'warn' });
  await reapInterruptedRuns(logger);
  const stateRoot = await mkdtemp(join(tmpdir(), PREFIX));
  await writeFile(join(stateRoot, 'owner.pid'), String(process.pid));
  const binaries = await resolveBinaries();
  const runtime = new ProcessRuntime({ root: join(stateRoot, 'embedded'), logger });
  const ports = new PortAllocator(join(stateRoot, 'ports.json'));
  let stopHost = (): Promise<void> => Promise.resolve();
  let hadRealNode = false;
  try {
    const [temporalPort, httpPort, uiPort] = await ports.allocate('temporal', 3);
    const temporal = startTemporalDevServer({
      runtime,
      binaries,
      port: temporalPort!,
      httpPort: httpPort!,
      uiPort: uiPort!,
      // Workflows are told to continue-as-new after 150 events, so tests exercise it.
      dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': CONTINUE_AS_NEW_AFTER_EVENTS },
    });
    const host = await startEmbeddedHost({
      dir: join(stateRoot, 'host'),
      runtime,
      binaries,
      ports,
      logger,
      kwokNodes: 3,
      etcdUnsafeNoFsync: true,
    });
    stopHost = () => host.stop();
    hadRealNode = host.realNode !== undefined;
    const kc = new KubeConfig();
    kc.loadFromFile(host.kubeconfigPath);
    await new HostCluster(kc).applyCRD();
    project.provide('temporalAddress', (await temporal).address);
    project.provide('temporalUiUrl', (await temporal).uiUrl!);
    project.provide('hostKubeconfig', host.kubeconfigPath);
    project.provide('stateRoot', stateRoot);
    project.provide('nodeAddress', host.realNode?.layout.nodeIP ?? '');
    project.provide('realNode', host.realNode?.name ?? '');
  } catch (e) {
    await stopHost();
    await runtime.shutdown();
    throw e;
  }
  return async () => {
    await stopHost();
    await runtime.shutdown();
    // Nothing of the run may outlive it: no process under its directory (containers included),
    // no bridge of the real node.
    const left = leftovers(stateRoot);
    if (left.length > 0) throw new Error(`processes left after the test run: ${left.join(', ')}`);
    const bridgeLeft = await run('ip', ['link', 'show', NodeNet.bridge]).then(
      () => true,
      () => false,
    );
    if (hadRealNode && bridgeLeft)
      throw new Error(`the real node's bridge ${NodeNet.bridge} is left after the test run`);
    if (!process.env.KVC_KEEP_TEST_STATE) await rm(stateRoot, { recursive: true, force: true });
  };
}
