/**
 * SplitRuntime (ADR 14): specs for pods go to the kubernetes runtime, the rest to the process
 * runtime; a component is waited for where it is; stop and remove reach both.
 */
import { describe, expect, it } from 'vitest';
import { SplitRuntime } from '../../src/runtime/splitRuntime.js';
import type {
  ComponentName,
  ComponentSpec,
  ComponentStatus,
  ControlPlaneRuntime,
} from '../../src/runtime/types.js';

/** A runtime that records what it is asked and holds what it was given. */
class Recording implements ControlPlaneRuntime {
  readonly calls: string[] = [];
  readonly held = new Map<string, ComponentStatus>();
  constructor(readonly label: string) {}
  ensure(spec: ComponentSpec) {
    this.calls.push(`ensure ${spec.name}`);
    const s = { owner: spec.owner, name: spec.name, running: true, restarts: 0 };
    this.held.set(`${spec.owner}/${spec.name}`, s);
    return Promise.resolve(s);
  }
  waitReady(owner: string, name: ComponentName) {
    this.calls.push(`waitReady ${name}`);
    return this.held.has(`${owner}/${name}`)
      ? Promise.resolve()
      : Promise.reject(new Error(`${this.label}: no ${name}`));
  }
  stop(owner: string, name: ComponentName) {
    this.calls.push(`stop ${name}`);
    this.held.delete(`${owner}/${name}`);
    return Promise.resolve();
  }
  remove(owner: string) {
    this.calls.push(`remove ${owner}`);
    for (const k of [...this.held.keys()]) if (k.startsWith(`${owner}/`)) this.held.delete(k);
    return Promise.resolve();
  }
  list(owner?: string) {
    return Promise.resolve([...this.held.values()].filter((s) => !owner || s.owner === owner));
  }
  resume() {
    return this.list();
  }
  shutdown() {
    this.calls.push('shutdown');
    return Promise.resolve();
  }
  logTail(_owner: string, name: ComponentName) {
    return Promise.resolve(`${this.label} log of ${name}`);
  }
}

const spec = (name: ComponentName, namespace?: string): ComponentSpec => ({
  owner: 't',
  name,
  command: `/bin/${name}`,
  args: [],
  ...(namespace ? { namespace } : {}),
});

describe('SplitRuntime', () => {
  it('runs specs for pods as pods and the rest as processes, each asked where it is', async () => {
    const pods = new Recording('pods');
    const processes = new Recording('processes');
    const split = new SplitRuntime(pods, processes);
    await split.ensure(spec('etcd', 'kvc-ns'));
    await split.ensure(spec('clustertree'));
    expect(pods.calls).toEqual(['ensure etcd']);
    expect(processes.calls).toEqual(['ensure clustertree']);

    await split.waitReady('t', 'etcd', 1000);
    await split.waitReady('t', 'clustertree', 1000);
    expect(pods.calls).toContain('waitReady etcd');
    expect(processes.calls).toContain('waitReady clustertree');
    expect(pods.calls).not.toContain('waitReady clustertree');
    expect(await split.logTail('t', 'etcd')).toBe('pods log of etcd');
    expect(await split.logTail('t', 'clustertree')).toBe('processes log of clustertree');
    expect((await split.list('t')).map((s) => s.name).sort()).toEqual(['clustertree', 'etcd']);

    // Held by neither (a worker that never ensured it): the pods runtime is asked, and says so.
    await expect(split.waitReady('t', 'kube-scheduler', 1000)).rejects.toThrow('pods: no kube-scheduler');

    await split.stop('t', 'etcd');
    expect(processes.calls).toContain('stop etcd');
    expect(pods.calls).toContain('stop etcd');
    await split.remove('t');
    expect(pods.calls).toContain('remove t');
    expect(processes.calls).toContain('remove t');
    expect(await split.list('t')).toEqual([]);
  });
});
