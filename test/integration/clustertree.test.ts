/**
 * clusterTree end to end, on kwok host nodes: a tenant's Deployment runs as host pods, status
 * and pod IPs come back, ConfigMaps and Services follow, clusterTree survives SIGKILL and repairs
 * drift, a removed node is drained and handed back, and deletion leaves the host clean.
 */
import {
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type V1Node,
  type V1Pod,
  type V1Taint,
} from '@kubernetes/client-node';
import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tenantId } from '../../src/activities/index.js';
import type { VirtualCluster, VirtualClusterRef } from '../../src/api/virtualCluster.js';
import {
  OriginLabel,
  Promotion,
  hostName,
  hostNamespace,
  tenantHash,
  tokenSecretName,
} from '../../src/clustertree/naming.js';
import { repoRoot, resolveBinaries } from '../../src/runtime/binaries.js';
import { HOST_ID } from '../../src/runtime/embedded.js';
import { CLUSTERTREE_NODE_FLAGS } from '../../src/runtime/nodeFlags.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createKwokNodes,
  createNamespace,
  createVirtualCluster,
  deleteNodes,
  deleteVirtualCluster,
  eventually,
  host,
  hostKubeConfig,
  kubectl,
  newStateDir,
  refOf,
  run,
  tenantCore,
  tenantKubeconfig,
  testOperator,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
let stateDir: string;
const suffix = randomUUID().slice(0, 5);
const NODES = [`ct-${suffix}-0`, `ct-${suffix}-1`];

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('clustertree');
  await createKwokNodes(NODES);
  operator = await testOperator({ stateDir, taskQueue: `clustertree-${randomUUID()}`, namespace });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
  await deleteNodes(NODES);
});

const isReady = (n: V1Node | V1Pod): boolean =>
  (n.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/**
 * The command lines of this machine's controller-manager processes of a cluster (its
 * `--cluster-name`), alone or in the one process of ADR 12 decision 16.
 */
async function controllerManagers(cluster: string): Promise<string[][]> {
  const found: string[][] = [];
  for (const pid of (await readdir('/proc')).filter((d) => /^\d+$/.test(d))) {
    const argv: string[] = await readFile(`/proc/${pid}/cmdline`, 'utf8').then(
      (c) => c.split('\0'),
      () => [],
    );
    if (
      argv.some((a) => basename(a) === 'kube-controller-manager') &&
      argv.includes(`--cluster-name=${cluster}`)
    )
      found.push(argv);
  }
  return found;
}

async function hostPods(ns: string): Promise<V1Pod[]> {
  return (await host().core.listNamespacedPod({ namespace: ns })).items;
}

describe('clusterTree', () => {
  let vc: VirtualCluster;
  let ref: VirtualClusterRef;
  let kubeconfig: string;
  let hostNs: string;

  it('promotes host nodes: the tenant sees them Ready with their capacity, the host marks them', async () => {
    await createVirtualCluster(namespace, 'flow', { promoteResources: { nodes: NODES } });
    vc = await waitForPhase(namespace, 'flow', 'Ready');
    ref = refOf(vc);
    hostNs = hostNamespace(ref);
    kubeconfig = await tenantKubeconfig(stateDir, vc);
    const conditions = Object.fromEntries((vc.status?.conditions ?? []).map((c) => [c.type, c.status]));
    expect(conditions).toMatchObject({ Ready: 'True', ClusterTreeReady: 'True', NodesPromoted: 'True' });
    expect(vc.status?.promoted).toMatchObject({
      nodes: [...NODES].sort(),
      nodeCount: 2,
      cpu: '64',
      memory: '512Gi',
    });

    const tenant = tenantCore(kubeconfig);
    const nodes = (await tenant.listNode()).items;
    expect(nodes.map((n) => n.metadata!.name).sort()).toEqual([...NODES].sort());
    for (const n of nodes) {
      expect(isReady(n)).toBe(true);
      expect(n.status?.allocatable).toMatchObject({ cpu: '32', memory: '256Gi' });
      expect(n.metadata?.labels).toMatchObject({
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
      });
    }
    for (const name of NODES) {
      const h = await host().core.readNode({ name });
      expect(h.metadata?.labels?.[Promotion.label]).toBe(tenantHash(ref));
      expect(h.spec?.taints).toContainEqual(
        expect.objectContaining({ key: Promotion.taint, effect: 'NoSchedule' }),
      );
    }

    // Lease heartbeats: renewTime moves on.
    const leases = (await import('@kubernetes/client-node')).CoordinationV1Api;
    const kc = new (await import('@kubernetes/client-node')).KubeConfig();
    kc.loadFromFile(kubeconfig);
    const coordination = kc.makeApiClient(leases);
    const renewed = async () =>
      new Date(
        (await coordination.readNamespacedLease({ name: NODES[0]!, namespace: 'kube-node-lease' })).spec!
          .renewTime!,
      ).getTime();
    const first = await renewed();
    await eventually('the lease to be renewed', async () => (await renewed()) > first, 20_000);
    // The Lease is the heartbeat: while nothing clusterTree copies changes on the host node,
    // clusterTree does not write the tenant node again, nor its status unchanged with new
    // heartbeat times (ADR 12, decision 20): not when the host node's heartbeat times move (as
    // kubelets and kwok write them), not for an extended resource the tenant advertises on the
    // node itself, through four Lease renewals and so at least one resync (5 s here). (The
    // tenant's TTL controller annotates the node meanwhile, as in any cluster.)
    await tenant.patchNodeStatus(
      {
        name: NODES[0]!,
        body: {
          status: { capacity: { 'example.com/dongle': '4' }, allocatable: { 'example.com/dongle': '4' } },
        },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const written = (n: V1Node) => ({ labels: n.metadata?.labels, taints: n.spec?.taints, status: n.status });
    const before = written(await tenant.readNode({ name: NODES[0]! }));
    for (let i = 0; i < 4; i++) {
      const last = await renewed();
      await eventually(
        'the host node heartbeat written',
        async () => {
          const h = await host().core.readNodeStatus({ name: NODES[0]! });
          for (const c of h.status?.conditions ?? []) c.lastHeartbeatTime = new Date();
          await host().core.replaceNodeStatus({ name: NODES[0]!, body: h });
          return true;
        },
        20_000,
      );
      await eventually('the lease to be renewed again', async () => (await renewed()) > last, 20_000);
    }
    expect(written(await tenant.readNode({ name: NODES[0]! }))).toEqual(before);

    // The node's health is its host node's (ADR 12, decision 19): the tenant's controller-manager
    // runs no node-lifecycle controller, the host's does; clusterTree is told so.
    const tenantCms = await controllerManagers(tenantId(ref));
    expect(tenantCms.length).toBeGreaterThan(0);
    for (const argv of tenantCms) expect(argv).toContain('--controllers=*,-node-lifecycle-controller');
    const hostCms = await controllerManagers(HOST_ID);
    expect(hostCms.length).toBeGreaterThan(0);
    for (const argv of hostCms) expect(argv.some((a) => a.startsWith('--controllers'))).toBe(false);
    const treeConfig = JSON.parse(
      await readFile(join(stateDir, 'tenants', tenantId(ref), 'clustertree', 'config.json'), 'utf8'),
    ) as Record<string, unknown>;
    // The harness shortens the renewal; the rest is the operator's.
    expect(treeConfig).toMatchObject({ nodeHealthFromHost: true, leaseDurationSeconds: 240 });
    // A health taint put on the host
    // node shows on the tenant's, beside a taint the tenant put there itself, and goes with it.
    const health = { key: 'node.kubernetes.io/out-of-service', value: 'nodeshutdown', effect: 'NoSchedule' };
    const own = { key: 'team.example/dedicated', value: 'ci', effect: 'NoSchedule' };
    const taintsOf = async (core: ReturnType<typeof tenantCore>) =>
      ((await core.readNode({ name: NODES[0]! })).spec?.taints ?? []).map(
        (t) => `${t.key}=${t.value}:${t.effect}`,
      );
    // A replace against what was read: another writer (kwok, a controller) in between is retried.
    const setTaints = (core: ReturnType<typeof tenantCore>, edit: (t: V1Taint[]) => V1Taint[]) =>
      eventually(
        'the node taints replaced',
        async () => {
          const n = await core.readNode({ name: NODES[0]! });
          const taints = edit(n.spec?.taints ?? []);
          await core.replaceNode({ name: NODES[0]!, body: { ...n, spec: { ...n.spec, taints } } });
          return true;
        },
        20_000,
      );
    await setTaints(tenant, (t) => [...t, own]);
    await setTaints(host().core, (t) => [...t, health]);
    await eventually(
      'the host taint on the tenant node',
      async () => {
        const t = await taintsOf(tenant);
        return t.includes('node.kubernetes.io/out-of-service=nodeshutdown:NoSchedule') &&
          t.includes('team.example/dedicated=ci:NoSchedule')
          ? t
          : undefined;
      },
      20_000,
    );
    // The host's own taints are not shown: the promotion's stays the host's.
    expect((await taintsOf(tenant)).some((t) => t.startsWith(Promotion.taint))).toBe(false);
    await setTaints(host().core, (t) => t.filter((x) => x.key !== health.key));
    await eventually(
      'the host taint gone from the tenant node',
      async () => {
        const t = await taintsOf(tenant);
        return !t.some((x) => x.startsWith('node.kubernetes.io/out-of-service')) &&
          t.includes('team.example/dedicated=ci:NoSchedule')
          ? t
          : undefined;
      },
      20_000,
    );
    await setTaints(tenant, (t) => t.filter((x) => x.key !== own.key));

    // kubectl get vc shows the promoted capacity.
    const table = await kubectl(inject('hostKubeconfig'), 'get', 'vc', 'flow', '-n', namespace);
    expect(table).toMatch(/flow\s+Ready\s+True\s+2\s+64\s+512Gi/);
  });

  it('runs with least privilege on both sides; no host credential reaches the tenant', async () => {
    const hostKc = inject('hostKubeconfig');
    const { kubectl: bin } = await resolveBinaries();
    /** `kubectl auth can-i` answers yes (exit 0) or no (exit 1) on stdout. */
    const can = async (kc: string, ...args: string[]): Promise<string> =>
      (
        await run(bin, ['--kubeconfig', kc, 'auth', 'can-i', ...args]).catch((e: { stdout?: string }) => ({
          stdout: e.stdout ?? '',
        }))
      ).stdout.trim();
    // In the tenant: a kubelet-like agent, not an administrator.
    const user = ['--as', 'kosmos-vc:clustertree'];
    expect(await can(kubeconfig, 'patch', 'pods', '--subresource=status', ...user)).toBe('yes');
    expect(await can(kubeconfig, 'create', 'nodes', ...user)).toBe('yes');
    expect(await can(kubeconfig, 'update', 'leases', '-n', 'kube-node-lease', ...user)).toBe('yes');
    expect(await can(kubeconfig, 'create', 'namespaces', ...user)).toBe('no');
    expect(await can(kubeconfig, 'create', 'deployments', ...user)).toBe('no');
    expect(await can(kubeconfig, 'create', 'pods', ...user)).toBe('no');
    expect(await can(kubeconfig, '*', '*', ...user)).toBe('no');
    // On the host: its own namespace and reading nodes, nothing else.
    const sa = ['--as', `system:serviceaccount:${hostNs}:clustertree`];
    expect(await can(hostKc, 'create', 'pods', '-n', hostNs, ...sa)).toBe('yes');
    expect(await can(hostKc, 'list', 'nodes', ...sa)).toBe('yes');
    expect(await can(hostKc, 'patch', 'nodes', ...sa)).toBe('no');
    expect(await can(hostKc, 'list', 'secrets', '-n', namespace, ...sa)).toBe('no');
    expect(await can(hostKc, 'list', 'pods', '-n', 'kube-system', ...sa)).toBe('no');
    expect(await can(hostKc, 'create', 'namespaces', ...sa)).toBe('no');

    // A pod asking for host access fails in the tenant with the reason; nothing reaches the host.
    const tenant = tenantCore(kubeconfig);
    await tenant.createNamespacedPod({
      namespace: 'default',
      body: {
        metadata: { name: 'escape' },
        spec: {
          hostPID: true,
          containers: [{ name: 'c', image: 'x', securityContext: { capabilities: { add: ['SYS_ADMIN'] } } }],
        },
      },
    });
    const refused = await eventually('the privileged pod to fail', async () => {
      const p = await tenant.readNamespacedPod({ name: 'escape', namespace: 'default' });
      return p.status?.phase === 'Failed' ? p.status : undefined;
    });
    expect(refused.reason).toBe('HostAccessForbidden');
    expect(refused.message).toContain('hostPID');
    expect(refused.message).toContain('capability SYS_ADMIN');
    await expect(
      host().core.readNamespacedPod({ name: hostName('default', 'escape'), namespace: hostNs }),
    ).rejects.toThrow();
    await tenant.deleteNamespacedPod({ name: 'escape', namespace: 'default' });
    // The host namespace enforces the baseline Pod Security level as a backstop.
    const ns = await host().core.readNamespace({ name: hostNs });
    expect(ns.metadata?.labels?.['pod-security.kubernetes.io/enforce']).toBe('baseline');

    // The host token exists only on the host.
    const token = await host().core.readNamespacedSecret({ name: 'clustertree-token', namespace: hostNs });
    const hostToken = token.data!.token!;
    const tenantSecrets = (await tenantCore(kubeconfig).listSecretForAllNamespaces()).items;
    for (const secret of tenantSecrets) expect(Object.values(secret.data ?? {})).not.toContain(hostToken);
  });

  it('runs a Deployment: tenant pods Running with the host pods IPs; scale to 0 removes host pods', async () => {
    await kubectl(
      kubeconfig,
      'create',
      'deployment',
      'web',
      '--image=registry.example/web:1',
      '--replicas=3',
    );
    const tenant = tenantCore(kubeconfig);
    const running = await eventually('3 tenant pods Running', async () => {
      const pods = (await tenant.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })).items;
      return pods.length === 3 &&
        pods.every((p) => p.status?.phase === 'Running' && isReady(p) && p.status.podIP)
        ? pods
        : undefined;
    });
    const onHost = await hostPods(hostNs);
    for (const p of running) {
      const h = onHost.find((x) => x.metadata!.name === hostName('default', p.metadata!.name!));
      expect(h, `host pod of ${p.metadata!.name}`).toBeDefined();
      expect(h!.spec!.nodeName).toBe(p.spec!.nodeName);
      expect(h!.status!.podIP).toBe(p.status!.podIP);
      expect(h!.metadata!.labels).toMatchObject({ app: 'web', [OriginLabel.tenant]: tenantHash(ref) });
      expect(p.status?.containerStatuses?.[0]?.ready).toBe(true);
      expect(NODES).toContain(p.spec!.nodeName);
    }
    // The tenant pod's token reaches its host pod as a Secret, never a host credential.
    const token = onHost[0]!.spec!.volumes!.flatMap((v) => v.projected?.sources ?? []).find((s) => s.secret);
    expect(token?.secret?.name).toBeDefined();
    expect(onHost[0]!.spec!.automountServiceAccountToken).toBe(false);

    // clusterTree's /metrics (its status port): pod syncs timed, what it mirrors, for this tenant.
    const config = JSON.parse(
      await readFile(join(stateDir, 'tenants', tenantId(ref), 'clustertree', 'config.json'), 'utf8'),
    ) as { listen: { address: string; port: number } };
    const metrics = await (
      await fetch(`http://${config.listen.address}:${config.listen.port}/metrics`)
    ).text();
    const series = (name: string, labels = '') =>
      new RegExp(`^${name}\\{tenant="${namespace}/flow"${labels && `,${labels}`}\\} (\\d+)$`, 'm').exec(
        metrics,
      )?.[1];
    expect(
      Number(series('kosmos_vc_clustertree_sync_duration_seconds_count', 'kind="pod",outcome="success"')),
    ).toBeGreaterThanOrEqual(3);
    expect(series('kosmos_vc_clustertree_tenant_nodes')).toBe(String(NODES.length));
    expect(series('kosmos_vc_clustertree_host_pods')).toBe('3');
    expect(series('kosmos_vc_clustertree_ready')).toBe('1');
    // Renewed (above) by updating the Lease each last wrote, against a real API server: nothing
    // else writes these Leases, so no renewal had to patch instead.
    expect(Number(series('kosmos_vc_clustertree_heartbeats_total'))).toBeGreaterThan(NODES.length);
    expect(series('kosmos_vc_clustertree_heartbeat_fallbacks_total')).toBe('0');

    await kubectl(kubeconfig, 'scale', 'deployment', 'web', '--replicas=0');
    await eventually('host pods gone after scale to 0', async () => (await hostPods(hostNs)).length === 0);
    await eventually(
      'tenant pods gone',
      async () => (await tenant.listNamespacedPod({ namespace: 'default' })).items.length === 0,
    );
  });

  it('mirrors a ConfigMap and its updates; a Service selects the host pods; endpoints list pod IPs', async () => {
    await kubectl(kubeconfig, 'create', 'configmap', 'settings', '--from-literal=mode=blue');
    await kubectl(kubeconfig, 'scale', 'deployment', 'web', '--replicas=2');
    await kubectl(kubeconfig, 'set', 'env', 'deployment/web', '--from=configmap/settings');
    await kubectl(kubeconfig, 'expose', 'deployment', 'web', '--port=80', '--target-port=8080');
    const tenant = tenantCore(kubeconfig);
    const cmName = hostName('default', 'settings');
    const hostCm = await eventually('the host copy of the ConfigMap', () =>
      host().core.readNamespacedConfigMap({ name: cmName, namespace: hostNs }),
    );
    expect(hostCm.data).toEqual({ mode: 'blue' });
    // An update (what `kubectl apply` of a changed manifest does) reaches the host copy.
    await tenant.replaceNamespacedConfigMap({
      name: 'settings',
      namespace: 'default',
      body: { metadata: { name: 'settings', namespace: 'default' }, data: { mode: 'green' } },
    });
    await eventually(
      'the update on the host',
      async () =>
        (await host().core.readNamespacedConfigMap({ name: cmName, namespace: hostNs })).data?.mode ===
        'green',
    );

    // Secrets the same way.
    await kubectl(kubeconfig, 'create', 'secret', 'generic', 'creds', '--from-literal=token=one');
    await kubectl(kubeconfig, 'set', 'env', 'deployment/web', '--from=secret/creds');
    const secretName = hostName('default', 'creds');
    const decoded = async () =>
      Buffer.from(
        (await host().core.readNamespacedSecret({ name: secretName, namespace: hostNs })).data?.token ?? '',
        'base64',
      ).toString();
    await eventually('the host copy of the Secret', async () => (await decoded()) === 'one');
    await tenant.replaceNamespacedSecret({
      name: 'creds',
      namespace: 'default',
      body: {
        metadata: { name: 'creds', namespace: 'default' },
        data: { token: Buffer.from('two').toString('base64') },
      },
    });
    await eventually('the Secret update on the host', async () => (await decoded()) === 'two');

    const svc = await eventually('the host Service', () =>
      host().core.readNamespacedService({ name: hostName('default', 'web'), namespace: hostNs }),
    );
    expect(svc.spec?.selector).toMatchObject({ app: 'web', [OriginLabel.tenant]: tenantHash(ref) });
    expect(svc.spec?.ports?.[0]).toMatchObject({ port: 80, targetPort: 8080 });

    await eventually('tenant endpoints to list exactly the Running pod IPs', async () => {
      const pods = (await tenant.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })).items;
      const ips = pods
        .filter((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp && isReady(p))
        .map((p) => p.status!.podIP!)
        .sort();
      if (ips.length !== 2) return undefined;
      const slices = JSON.parse(
        await kubectl(
          kubeconfig,
          'get',
          'endpointslices',
          '-l',
          'kubernetes.io/service-name=web',
          '-o',
          'json',
        ),
      ) as { items: { endpoints?: { addresses: string[] }[] }[] };
      const listed = slices.items.flatMap((s) => (s.endpoints ?? []).flatMap((e) => e.addresses)).sort();
      // The host Service selects the same pods (the namespace also holds the tenant API's and
      // DNS's Services, whose endpoints are the node address).
      const hostSlices = JSON.parse(
        await kubectl(
          inject('hostKubeconfig'),
          'get',
          'endpointslices',
          '-n',
          hostNs,
          '-l',
          `kubernetes.io/service-name=${hostName('default', 'web')}`,
          '-o',
          'json',
        ),
      ) as { items: { endpoints?: { addresses: string[] }[] }[] };
      const hostListed = hostSlices.items
        .flatMap((s) => (s.endpoints ?? []).flatMap((e) => e.addresses))
        .sort();
      return (
        JSON.stringify(listed) === JSON.stringify(ips) && JSON.stringify(hostListed) === JSON.stringify(ips)
      );
    });
  });

  it('answers logs and exec of a pod on a simulated node with a clear error; isolates the namespace', async () => {
    const [pod] = (
      await tenantCore(kubeconfig).listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })
    ).items;
    for (const args of [
      ['logs', pod!.metadata!.name!],
      ['exec', pod!.metadata!.name!, '--', 'true'],
    ]) {
      const err = await kubectl(kubeconfig, ...args).then(
        () => 'succeeded',
        (e: { stderr?: string }) => e.stderr ?? '',
      );
      expect(err).toContain('a simulated (kwok) node');
    }
    // The NetworkPolicy a host with a policy engine enforces between tenants.
    const policy = JSON.parse(
      await kubectl(
        inject('hostKubeconfig'),
        'get',
        'networkpolicy',
        '-n',
        hostNs,
        'kosmos-vc-tenant-isolation',
        '-o',
        'json',
      ),
    ) as { spec: { podSelector: object; policyTypes: string[]; ingress: { from: unknown[] }[] } };
    expect(policy.spec.podSelector).toEqual({});
    expect(policy.spec.policyTypes).toEqual(['Ingress']);
    expect(policy.spec.ingress.map((r) => r.from)).toEqual([
      [{ podSelector: {} }],
      [{ ipBlock: { cidr: `${inject('nodeAddress')}/32` } }],
    ]);
  });

  it('repairs a host pod deleted behind its back', async () => {
    const tenant = tenantCore(kubeconfig);
    const [victim] = await hostPods(hostNs);
    await host().core.deleteNamespacedPod({
      name: victim!.metadata!.name!,
      namespace: hostNs,
      gracePeriodSeconds: 0,
    });
    await eventually('the host pod to be back, Running, with a new uid', async () => {
      const again = (await hostPods(hostNs)).find((p) => p.metadata!.name === victim!.metadata!.name);
      return again && again.metadata!.uid !== victim!.metadata!.uid && again.status?.phase === 'Running';
    });
    // The tenant sees it Running again, with the new host pod's IP.
    await eventually('both tenant pods Running again', async () => {
      const pods = (await tenant.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })).items;
      const again = (await hostPods(hostNs)).find((p) => p.metadata!.name === victim!.metadata!.name);
      const mirrored = pods.find((p) => hostName('default', p.metadata!.name!) === victim!.metadata!.name);
      return (
        pods.filter((p) => p.status?.phase === 'Running').length === 2 &&
        mirrored?.status?.podIP === again?.status?.podIP
      );
    });
    // A token Secret deleted behind its back is issued again while its host pod runs.
    const tokenName = tokenSecretName('default', String(victim!.metadata!.annotations?.['kosmos.io/name']));
    const tokenBefore = await host().core.readNamespacedSecret({ name: tokenName, namespace: hostNs });
    await host().core.deleteNamespacedSecret({ name: tokenName, namespace: hostNs });
    await eventually(
      'the token Secret issued again',
      async () =>
        (await host().core.readNamespacedSecret({ name: tokenName, namespace: hostNs })).metadata!.uid !==
        tokenBefore.metadata!.uid,
      30_000,
    );
  });

  it('runs clusterTree with its V8 flags (ADR 12, decision 12)', async () => {
    const tree = (await operator.runtime!.list(tenantId(ref))).find((c) => c.name === 'clustertree');
    const argv = (await readFile(`/proc/${tree!.pid!}/cmdline`, 'utf8')).split('\0');
    expect(argv.slice(1, 1 + CLUSTERTREE_NODE_FLAGS.length)).toEqual([...CLUSTERTREE_NODE_FLAGS]);
  });

  it('converges after clusterTree is SIGKILLed mid-sync: no duplicate, no orphan', async () => {
    const tenant = tenantCore(kubeconfig);
    const before = (await operator.runtime!.list(tenantId(ref))).find((c) => c.name === 'clustertree');
    expect(before?.pid).toBeGreaterThan(0);
    // Kill it while it is creating host pods: some exist, some do not yet. It can create all twenty
    // between two polls (a CI run saw that), so a watch kills it on the first new host pod.
    const alreadyThere = new Set((await hostPods(hostNs)).map((p) => p.metadata!.name!));
    let killError: unknown;
    let killed!: () => void;
    let done = false;
    const firstNew = new Promise<void>((resolve) => (killed = resolve));
    const watch = await new Watch(hostKubeConfig()).watch(
      `/api/v1/namespaces/${hostNs}/pods`,
      // Host pods of the Deployment only (they carry the tenant's labels): no churn of others.
      { labelSelector: 'app=web' },
      (type: string, pod: V1Pod) => {
        if (done || type !== 'ADDED' || alreadyThere.has(pod.metadata!.name!)) return;
        done = true;
        try {
          process.kill(before!.pid!, 'SIGKILL');
        } catch (e) {
          killError = e;
        }
        killed();
      },
      () => undefined,
    );
    await kubectl(kubeconfig, 'scale', 'deployment', 'web', '--replicas=20');
    await Promise.race([
      firstNew,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no new host pod in 20s')), 20_000)),
    ]).finally(() => watch.abort());
    expect(killError).toBeUndefined();
    const atKill = (await hostPods(hostNs)).length;
    await eventually('the supervisor to restart clusterTree', async () => {
      const now = (await operator.runtime!.list(tenantId(ref))).find((c) => c.name === 'clustertree');
      return now?.running && now.pid !== before!.pid;
    });
    await eventually(
      'twenty Running tenant pods, each with exactly one host pod',
      async () => {
        const pods = (await tenant.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' }))
          .items;
        const onHost = await hostPods(hostNs);
        const want = pods.map((p) => hostName('default', p.metadata!.name!)).sort();
        const have = onHost.map((p) => p.metadata!.name!).sort();
        return (
          pods.length === 20 &&
          pods.every((p) => p.status?.phase === 'Running') &&
          JSON.stringify(want) === JSON.stringify(have)
        );
      },
      60_000,
    );
    expect(atKill, 'the kill happened mid-sync').toBeLessThan(20);
  });

  it('drains a node removed from spec, hands it back, and reschedules its pods', async () => {
    const [keep, drop] = NODES as [string, string];
    const tenant = tenantCore(kubeconfig);
    // The CLI patches the spec and follows the workflow until the node is handed back.
    const { stdout } = await run(
      process.execPath,
      [
        join(repoRoot(), 'dist', 'src', 'cli', 'main.js'),
        'resize',
        `${namespace}/flow`,
        '--remove-node',
        drop,
      ],
      { env: { ...process.env, KUBECONFIG: inject('hostKubeconfig') }, timeout: 120_000 },
    );
    expect(stdout).toContain(`requesting nodes [${keep}]`);
    expect(stdout).toMatch(/done in [0-9]+s: 1 node\(s\), 32 CPU, 256Gi/);
    const vcNow = await host().getVirtualCluster({ namespace, name: 'flow' });
    expect(vcNow?.spec.promoteResources?.nodes).toEqual([keep]);
    expect(vcNow?.status?.observedGeneration).toBe(vcNow?.metadata.generation);
    const dropped = await host().core.readNode({ name: drop });
    expect(dropped.metadata?.labels?.[Promotion.label]).toBeUndefined();
    expect((dropped.spec?.taints ?? []).filter((t) => t.key === Promotion.taint)).toEqual([]);
    expect((await tenant.listNode()).items.map((n) => n.metadata!.name)).toEqual([keep]);
    expect((await hostPods(hostNs)).filter((p) => p.spec?.nodeName === drop)).toEqual([]);
    await eventually('all twenty pods Running on the kept node', async () => {
      const pods = (await tenant.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })).items;
      return (
        pods.length === 20 && pods.every((p) => p.status?.phase === 'Running' && p.spec?.nodeName === keep)
      );
    });
  });

  it('deletion with pods running empties the host namespace, hands nodes back, tears down', async () => {
    await deleteVirtualCluster(namespace, 'flow');
    await waitForGone(namespace, 'flow');
    await expect(host().core.readNamespace({ name: hostNs })).rejects.toThrow();
    for (const name of NODES) {
      const n = await host().core.readNode({ name });
      expect(n.metadata?.labels?.[Promotion.label]).toBeUndefined();
      expect((n.spec?.taints ?? []).filter((t) => t.key === Promotion.taint)).toEqual([]);
    }
    expect(await operator.runtime!.list(tenantId(ref))).toEqual([]);
  });
});
