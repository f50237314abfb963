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

const tick = () => new Promise((r) => setImmediate(r));

/** A KubernetesObjectApi whose patches wait until ended, recording when each began and ended. */
function fakeApi(failing?: string) {
  const events: string[] = [];
  const pending = new Map<string, () => void>();
  const api = {
    patch: (o: KubernetesObject) => {
      const name = o.metadata!.name!;
      events.push(`start ${name}`);
      return new Promise((resolve, reject) =>
        pending.set(name, () => {
          events.push(`end ${name}`);
          if (name === failing) reject(new Error(`refused ${name}`));
          else resolve(o);
        }),
      );
    },
  } as unknown as KubernetesObjectApi;
  /** Ends the patch of `name` once it is in flight. */
  const end = async (name: string) => {
    while (!pending.has(name)) await tick();
    pending.get(name)!();
    pending.delete(name);
    await tick();
  };
  return { api, events, end };
}

/** Whether `p` has settled by now. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await tick();
  return done;
}

describe('apply', () => {
  it('writes namespaces and service accounts first, one by one, then the rest together', async () => {
    const { api, events, end } = fakeApi();
    const done = apply(api, [
      obj('Role', 'role'),
      obj('Secret', 'token'),
      obj('Namespace', 'ns'),
      obj('ServiceAccount', 'sa'),
      obj('RoleBinding', 'binding'),
    ]);
    await end('ns');
    await end('sa');
    // The other three are all sent before any of them is answered.
    await tick();
    expect(events).toEqual([
      'start ns',
      'end ns',
      'start sa',
      'end sa',
      'start role',
      'start token',
      'start binding',
    ]);
    for (const name of ['binding', 'role', 'token']) await end(name);
    await done;
  });

  it('fails with the refused object only once every other request has ended', async () => {
    const { api, end } = fakeApi('role');
    const done = apply(api, [obj('Role', 'role'), obj('RoleBinding', 'binding')]);
    void done.catch(() => undefined); // awaited below
    await end('role');
    expect(await settled(done)).toBe(false);
    await end('binding');
    await expect(done).rejects.toThrow('refused role');
  });
});
