/**
 * failWithPeer: the API server's step, started beside etcd's (ADR 12, decision 22), ends as soon
 * as etcd cannot start, and otherwise only with its own wait.
 */
import { ApplicationFailure } from '@temporalio/activity';
import { describe, expect, it } from 'vitest';
import { createComponentStarter } from '../../src/activities/components.js';
import type { HostCluster } from '../../src/activities/hostCluster.js';
import {
  ComponentExitedError,
  type ComponentName,
  type ComponentStatus,
  type ControlPlaneRuntime,
} from '../../src/runtime/types.js';
import { createLogger } from '../../src/worker/logger.js';

/** A runtime that lists the components given, and answers waitReady as `ready` says. */
function fakeRuntime(
  listed: () => ComponentName[],
  ready: (name: ComponentName) => Promise<void>,
): ControlPlaneRuntime & { waits: ComponentName[] } {
  const waits: ComponentName[] = [];
  return {
    waits,
    list: (owner?: string) =>
      Promise.resolve(
        listed().map((name): ComponentStatus => ({ owner: owner ?? 'o', name, running: true, restarts: 0 })),
      ),
    waitReady: (_owner: string, name: ComponentName) => {
      waits.push(name);
      return ready(name);
    },
  } as unknown as ControlPlaneRuntime & { waits: ComponentName[] };
}

const starter = (runtime: ControlPlaneRuntime) =>
  createComponentStarter({
    host: {} as HostCluster,
    runtime,
    bins: () => Promise.reject(new Error('not used')),
    readinessTimeoutMs: 5_000,
    log: () => createLogger({ level: 'error' }),
  });

describe('failWithPeer', () => {
  it("fails with etcd's exit, as a non-retryable ComponentExited naming etcd", async () => {
    const runtime = fakeRuntime(
      () => ['etcd'],
      () => Promise.reject(new ComponentExitedError('o', 'etcd', 1, 'bind: address already in use')),
    );
    const err = await starter(runtime)
      .failWithPeer('o', 'etcd', new AbortController().signal)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).type).toBe('ComponentExited');
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).message).toContain('address already in use');
  });

  it('looks again for a peer not yet running, and waits for it once it runs', async () => {
    let listed: ComponentName[] = [];
    let readyNow!: () => void;
    const runtime = fakeRuntime(
      () => listed,
      () => new Promise<void>((r) => (readyNow = r)),
    );
    let settled = false;
    const waiting = starter(runtime)
      .failWithPeer('o', 'etcd', new AbortController().signal)
      .then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 250));
    expect(runtime.waits).toEqual([]);
    listed = ['etcd'];
    await new Promise((r) => setTimeout(r, 250));
    expect(runtime.waits).toEqual(['etcd']);
    expect(settled).toBe(false);
    readyNow();
    await waiting;
    expect(settled).toBe(true);
  });

  it("ends without failing when the step's own wait ended first (a peer this runtime does not run, or one that failed after)", async () => {
    const done = new AbortController();
    const absent = fakeRuntime(
      () => [],
      () => Promise.resolve(),
    );
    const waiting = starter(absent).failWithPeer('o', 'etcd', done.signal);
    await new Promise((r) => setTimeout(r, 150));
    done.abort();
    await expect(waiting).resolves.toBeUndefined();

    const late = new AbortController();
    let fail!: (e: Error) => void;
    const failsLate = fakeRuntime(
      () => ['etcd'],
      () => new Promise<void>((_, reject) => (fail = reject)),
    );
    const waitingLate = starter(failsLate).failWithPeer('o', 'etcd', late.signal);
    await new Promise((r) => setTimeout(r, 50));
    late.abort();
    fail(new ComponentExitedError('o', 'etcd', 1, 'stopped'));
    await expect(waitingLate).resolves.toBeUndefined();
  });
});
