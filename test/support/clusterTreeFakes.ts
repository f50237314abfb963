/**
 * What the unit tests of a clusterTree process need without a cluster: a kubeconfig whose API
 * server nothing answers (a tree then waits for its first lists, /readyz 503), a free port, the
 * status of a tenant's /readyz, a tenant's configuration against that server, and a wait; and
 * for NodeSync, a configuration and watched lists over plain maps.
 */
import { createServer } from 'node:net';
import { ClusterTreeConfig, type ClusterTreeConfigInput } from '../../src/clustertree/config.js';

export const UNREACHABLE_KUBECONFIG = `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "https://127.0.0.1:1", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token: t } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`;

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

/** The HTTP status of a tenant's /readyz on this port; 0 when nothing listens. */
export const readyzStatus = (port: number): Promise<number> =>
  fetch(`http://127.0.0.1:${port}/readyz`).then(
    (r) => r.status,
    () => 0,
  );

export async function until(what: string, fn: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A tenant's clusterTree configuration whose API servers (both at `kubeconfig`) nothing answers. */
export function unreachableTreeConfig(
  owner: string,
  kubeconfig: string,
  port: number,
): ClusterTreeConfigInput {
  return {
    tenant: { namespace: 'ns', name: owner, uid: `${owner}-uid` },
    hostNamespace: `vc-${owner}`,
    tenantKubeconfig: kubeconfig,
    hostKubeconfig: kubeconfig,
    listen: { address: '127.0.0.1', port },
    virtualNodeName: 'virtual',
    quotaName: 'quota',
  };
}

/** The configuration of one tenant's NodeSync, with `extra` over it. */
export function nodeSyncConfig(extra: Partial<ClusterTreeConfigInput> = {}): ClusterTreeConfig {
  return ClusterTreeConfig.parse({
    tenant: { namespace: 'team', name: 'vc1', uid: 'u' },
    hostNamespace: 'kvc-team-vc1',
    tenantKubeconfig: '/t/kubeconfig',
    listen: { address: '127.0.0.1', port: 1 },
    virtualNodeName: 'vc1-resources',
    quotaName: 'promoted',
    ...extra,
  });
}

/** A watched list (ListWatch) over a map: what a sync reads of it. */
export const listOf = <T>(m: Map<string, T>) =>
  ({ get: (name: string) => m.get(name), list: () => [...m.values()] }) as never;
