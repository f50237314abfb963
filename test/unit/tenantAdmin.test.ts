/**
 * The operator's server-side apply of a set of objects: namespaces and service accounts first,
 * in order (a token Secret made before its service account is deleted by the token controller),
 * then the rest at once; a failure is thrown once every request has ended.
 */
import type { KubernetesObject, KubernetesObjectApi } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { apply } from '../../src/activities/tenantAdmin.js';

const obj = (kind: string, name: string): KubernetesObject => ({
  apiVersion: 'v1',
  kind,
  metadata: { name },
});

/** A KubernetesObjectApi whose patches wait until released, recording when each began and ended. */
function fakeApi(failing?: string) {
  const events: string[] = [];
  const pending: (() => void)[] = [];
  const api = {
    patch: (o: KubernetesObject) => {
      events.push(`start ${o.metadata!.name}`);
      return new Promise((resolve, reject) =>
        pending.push(() => {
          events.push(`end ${o.metadata!.name}`);
          if (o.metadata!.name === failing) reject(new Error(`refused ${failing}`));
          else resolve(o);
        }),
      );
    },
  } as unknown as KubernetesObjectApi;
  /** Ends every patch in flight, until `done` settles. */
  const drain = async (done: Promise<unknown>) => {
    let settled = false;
    void done.then(
      () => (settled = true),
      () => (settled = true),
    );
    while (!settled) {
      await new Promise((r) => setImmediate(r));
      for (const end of pending.splice(0)) end();
    }
  };
  return { api, events, drain };
}

describe('apply', () => {
  it('writes namespaces and service accounts first, one by one, then the rest together', async () => {
    const { api, events, drain } = fakeApi();
    const done = apply(api, [
      obj('Role', 'role'),
      obj('Secret', 'token'),
      obj('Namespace', 'ns'),
      obj('ServiceAccount', 'sa'),
      obj('RoleBinding', 'binding'),
    ]);
    await drain(done);
    await done;
    expect(events.slice(0, 4)).toEqual(['start ns', 'end ns', 'start sa', 'end sa']);
    // The other three were all sent before any of them was answered.
    expect(events.slice(4, 7).sort()).toEqual(['start binding', 'start role', 'start token']);
    expect(events.slice(7).sort()).toEqual(['end binding', 'end role', 'end token']);
  });

  it('fails with the refused object once every other request has ended', async () => {
    const { api, events, drain } = fakeApi('role');
    const done = apply(api, [obj('Role', 'role'), obj('RoleBinding', 'binding')]);
    await drain(done);
    await expect(done).rejects.toThrow('refused role');
    expect(events).toContain('end binding');
  });
});
