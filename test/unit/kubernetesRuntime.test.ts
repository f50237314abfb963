/**
 * When the kubernetes runtime stops waiting for a component (ADR 14): what waiting longer would
 * not mend ends the wait with why; a pull that may succeed later does not.
 */
import type { V1ContainerStatus, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { stuckReason } from '../../src/runtime/kubernetesRuntime.js';

const pod = (status: Partial<V1ContainerStatus>): V1Pod => ({
  status: {
    containerStatuses: [
      {
        name: 'etcd',
        image: 'registry.k8s.io/etcd:x',
        imageID: '',
        ready: false,
        restartCount: 0,
        ...status,
      },
    ],
  },
});
const waiting = (reason: string, message: string, restartCount = 0) =>
  pod({ restartCount, state: { waiting: { reason, message } } });

describe('stuckReason', () => {
  it('names an image that does not exist, a container that cannot be made, one that keeps crashing', () => {
    expect(
      stuckReason('etcd', [
        waiting('ErrImagePull', 'failed to resolve reference "registry.k8s.io/etcd:x": not found'),
      ]),
    ).toMatch(/^etcd: image registry\.k8s\.io\/etcd:x not found/);
    expect(stuckReason('etcd', [waiting('InvalidImageName', 'bad')])).toBe('etcd: InvalidImageName: bad');
    expect(stuckReason('etcd', [waiting('CreateContainerConfigError', 'secret "x" not found')])).toBe(
      'etcd: CreateContainerConfigError: secret "x" not found',
    );
    expect(stuckReason('etcd', [waiting('CrashLoopBackOff', 'back-off', 2)])).toBe('crashing');
  });

  it('waits on what may pass: a registry away, a first crash, a container starting', () => {
    expect(
      stuckReason('etcd', [
        waiting('ImagePullBackOff', 'dial tcp 127.0.0.1:5000: connect: connection refused'),
      ]),
    ).toBe(undefined);
    expect(stuckReason('etcd', [waiting('CrashLoopBackOff', 'back-off', 1)])).toBe(undefined);
    expect(stuckReason('etcd', [waiting('ContainerCreating', '')])).toBe(undefined);
    expect(stuckReason('etcd', [pod({ ready: true, restartCount: 5, state: { running: {} } })])).toBe(
      undefined,
    );
    expect(stuckReason('etcd', [])).toBe(undefined);
  });
});
