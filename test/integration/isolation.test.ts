/**
 * Two tenants are two clusters: each trusts only its own credentials, neither trusts the
 * host's, the host trusts neither, and nothing created in one is visible in another.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  newStateDir,
  statusAs,
  testOperator,
  waitForGone,
  waitForPhase,
  type Credentials,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
let a: Credentials;
let b: Credentials;
let hostCreds: Credentials;

beforeAll(async () => {
  namespace = await createNamespace('isolation');
  operator = await testOperator({
    stateDir: await newStateDir(),
    taskQueue: `isolation-${randomUUID()}`,
    namespace,
  });
  await Promise.all([
    createVirtualCluster(namespace, 'tenant-a'),
    createVirtualCluster(namespace, 'tenant-b'),
  ]);
  const [va, vb] = await Promise.all([
    waitForPhase(namespace, 'tenant-a', 'Ready'),
    waitForPhase(namespace, 'tenant-b', 'Ready'),
  ]);
  a = credentialsOf(Buffer.from(va.spec.kubeconfig!, 'base64').toString());
  b = credentialsOf(Buffer.from(vb.spec.kubeconfig!, 'base64').toString());
  hostCreds = credentialsOf(await readFile(inject('hostKubeconfig'), 'utf8'));
});
afterAll(async () => {
  await Promise.all(
    ['tenant-a', 'tenant-b'].map((n) => deleteVirtualCluster(namespace, n).catch(() => undefined)),
  );
  await Promise.all(['tenant-a', 'tenant-b'].map((n) => waitForGone(namespace, n).catch(() => undefined)));
  await operator?.stop({ stopTenants: true });
});

describe('tenant isolation', () => {
  it('gives each tenant its own apiserver, CA and credentials', () => {
    expect(a.server).not.toBe(b.server);
    expect(a.caPem).not.toBe(b.caPem);
    expect(a.caPem).not.toBe(hostCreds.caPem);
  });

  it('accepts each tenant’s own credentials', async () => {
    expect(await statusAs(a.server, a.caPem, a)).toBe(200);
    expect(await statusAs(b.server, b.caPem, b)).toBe(200);
  });

  it('rejects tenant A’s credentials at tenant B and at the host', async () => {
    expect(await statusAs(b.server, b.caPem, a)).toBe(401);
    expect(await statusAs(hostCreds.server, hostCreds.caPem, a)).toBe(401);
  });

  it('rejects the host’s credentials at both tenants', async () => {
    expect(await statusAs(a.server, a.caPem, hostCreds)).toBe(401);
    expect(await statusAs(b.server, b.caPem, hostCreds)).toBe(401);
  });

  it('does not let a client that trusts tenant A’s CA talk to tenant B unawares', async () => {
    await expect(statusAs(b.server, a.caPem, a)).rejects.toThrow(/self.signed|unable to verify|certificate/i);
  });
});
