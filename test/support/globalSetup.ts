/**
 * Starts the real servers the integration tests share, once per run: a Temporal dev server
 * (in memory, headless) and the embedded host cluster (etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler, kwok). Everything is stopped by PID at the end.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { HostCluster } from '../../src/activities/hostCluster.js';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import { startEmbeddedHost, startTemporalDevServer } from '../../src/runtime/embedded.js';
import { PortAllocator } from '../../src/runtime/ports.js';
import { ProcessRuntime } from '../../src/runtime/processRuntime.js';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger } from '../../src/worker/logger.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    hostKubeconfig: string;
    stateRoot: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const logger = createLogger({ level: process.env.LOG_LEVEL === 'debug' ? 'debug' : 'warn' });
  const stateRoot = await mkdtemp(join(tmpdir(), 'kvc-test-'));
  const binaries = await resolveBinaries();
  const runtime = new ProcessRuntime({ root: join(stateRoot, 'embedded'), logger });
  const ports = new PortAllocator(join(stateRoot, 'ports.json'));
  try {
    const [temporalPort, httpPort] = await ports.allocate('temporal', 2);
    const temporal = startTemporalDevServer({ runtime, binaries, port: temporalPort!, httpPort: httpPort! });
    const host = await startEmbeddedHost({
      dir: join(stateRoot, 'host'),
      runtime,
      binaries,
      ports,
      logger,
      kwokNodes: 3,
      etcdUnsafeNoFsync: true,
    });
    const kc = new KubeConfig();
    kc.loadFromFile(host.kubeconfigPath);
    await new HostCluster(kc).applyCRD();
    project.provide('temporalAddress', (await temporal).address);
    project.provide('hostKubeconfig', host.kubeconfigPath);
    project.provide('stateRoot', stateRoot);
  } catch (e) {
    await runtime.shutdown();
    throw e;
  }
  return async () => {
    await runtime.shutdown();
    if (!process.env.KVC_KEEP_TEST_STATE) await rm(stateRoot, { recursive: true, force: true });
  };
}
