/**
 * A component's start in a step that is cancelled (the other of two steps at once failed: ADR
 * 12, decision 22): it starts nothing once cancelled, and stops waiting when cancelled during
 * its wait.
 */
import { CancelledFailure } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { createComponentStarter } from '../../src/activities/components.js';
import type { HostCluster } from '../../src/activities/hostCluster.js';
import type { StepInput } from '../../src/activities/types.js';
import type { ControlPlaneLayout } from '../../src/runtime/controlPlane.js';
import type { ComponentSpec, ControlPlaneRuntime } from '../../src/runtime/types.js';
import { createLogger } from '../../src/worker/logger.js';

/** A runtime whose components never get ready: waitReady ends only with its signal. */
function neverReady(): ControlPlaneRuntime & { ensured: string[]; signals: (AbortSignal | undefined)[] } {
  const ensured: string[] = [];
  const signals: (AbortSignal | undefined)[] = [];
  return {
    ensured,
    signals,
    ensure: (spec: ComponentSpec) => {
      ensured.push(spec.name);
      return Promise.resolve({ owner: spec.owner, name: spec.name, running: true, restarts: 0, pid: 1 });
    },
    waitReady: (_o: string, _n: string, _t: number, signal?: AbortSignal) => {
      signals.push(signal);
      return new Promise<void>((_, reject) =>
        signal?.addEventListener('abort', () => reject(signal.reason as Error), { once: true }),
      );
    },
  } as unknown as ControlPlaneRuntime & { ensured: string[]; signals: (AbortSignal | undefined)[] };
}

const input: StepInput = {
  ref: { namespace: 'ns', name: 'vc', uid: 'u' },
  allocation: {
    id: 'ns-vc-u',
    dir: '/nonexistent/ns-vc-u',
    address: '127.0.0.1',
    ports: { etcdClient: 1, etcdPeer: 2, apiserver: 3, controllerManager: 4, scheduler: 5 },
    serviceCIDR: '10.96.0.0/12',
  },
};
const layout: ControlPlaneLayout = {
  id: 'ns-vc-u',
  dir: '/nonexistent/ns-vc-u',
  address: '127.0.0.1',
  ports: input.allocation.ports,
  serviceCIDR: '10.96.0.0/12',
};
const etcd = (): ComponentSpec => ({ owner: 'ns-vc-u', name: 'etcd', command: '/bin/true', args: [] });

function starter(runtime: ControlPlaneRuntime) {
  return createComponentStarter({
    host: {} as HostCluster,
    runtime,
    bins: () => Promise.resolve({} as never),
    readinessTimeoutMs: 60_000,
    log: () => createLogger({ level: 'error' }),
  });
}

describe('a component started by a cancelled step', () => {
  it('is not started once the step is cancelled', async () => {
    const runtime = neverReady();
    const env = new MockActivityEnvironment();
    env.cancel();
    await expect(env.run(() => starter(runtime).startPlaced(input, etcd, layout))).rejects.toBeInstanceOf(
      CancelledFailure,
    );
    expect(runtime.ensured).toEqual([]);
  });

  it('is no longer waited for once the step is cancelled during its wait', async () => {
    const runtime = neverReady();
    const env = new MockActivityEnvironment();
    const started = env.run(() => starter(runtime).startPlaced(input, etcd, layout));
    await new Promise((r) => setTimeout(r, 100));
    expect(runtime.ensured).toEqual(['etcd']);
    // The runtime got the step's signal (the process runtime stops probing with it).
    expect(runtime.signals[0]).toBeInstanceOf(AbortSignal);
    env.cancel();
    await expect(started).rejects.toBeInstanceOf(CancelledFailure);
  });
});
