/**
 * A VirtualCluster's life against real components: Temporal dev server, host control plane,
 * tenant etcd and kube-control-plane (kube-apiserver, kube-controller-manager, kube-scheduler), real kubectl.
 */
import { chromium } from 'playwright-core';
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { kubeconfigSecretName } from '../../src/activities/index.js';
import { PKI_CHECKSUM_ANNOTATION, PKI_SECRET } from '../../src/activities/pkiSecret.js';
import { hostNamespace } from '../../src/clustertree/naming.js';
import { readSet, setChecksum } from '../../src/pki/controlPlanePki.js';
import type { TenantAllocation } from '../../src/activities/types.js';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { FINALIZER, GROUP, PLURAL, VERSION } from '../../src/api/virtualCluster.js';
import { apiMessage } from '../../src/api/kubeClient.js';
import { canBind } from '../../src/runtime/ports.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  STEP_NAMES,
  progressQuery,
  searchAttributes,
  workflowIdFor,
} from '../../src/workflows/definitions.js';
import {
  createNamespace,
  createVirtualCluster,
  credentialsOf,
  deleteVirtualCluster,
  eventually,
  host,
  kosmosVc,
  kubectl,
  newStateDir,
  pathExists,
  processesMentioning,
  runningClusterTree,
  refOf,
  statusAs,
  tenantKubeconfig,
  testOperator,
  waitForGone,
  waitForPhase,
  setSleep,
} from '../support/harness.js';

let operator: Operator;
let namespace: string;
/**
 * What runs for a tenant in processes of its own: its control plane (clusterTree:
 * runningClusterTree), by default etcd, and the API server, controller-manager and scheduler in
 * one process.
 */
const TENANT_PROCESSES = ['etcd', 'kube-control-plane'];
/** Debian's chromium (scripts/setup.sh --tests). */
const CHROMIUM = process.env.KVC_CHROMIUM ?? '/usr/bin/chromium';
let stateDir: string;

beforeAll(async () => {
  stateDir = await newStateDir();
  namespace = await createNamespace('lifecycle');
  operator = await testOperator({ stateDir, taskQueue: `lifecycle-${randomUUID()}`, namespace });
});
afterAll(async () => {
  await operator?.stop({ stopTenants: true });
});

async function allocationOf(name: string): Promise<TenantAllocation> {
  const vc = await host().getVirtualCluster({ namespace, name });
  const handle = operator.client.workflow.getHandle(
    workflowIdFor({ namespace, name, uid: vc!.metadata.uid }),
  );
  return (await handle.query(progressQuery)).allocation!;
}

describe('VirtualCluster lifecycle', () => {
  it('creates a tenant control plane that answers plain kubectl with the issued kubeconfig', async () => {
    await createVirtualCluster(namespace, 'tenant1');
    const vc = await waitForPhase(namespace, 'tenant1', 'Ready');

    // The kubeconfig is in spec.kubeconfig and, identically, in the Secret status points to.
    expect(vc.spec.kubeconfig).toBeTruthy();
    expect(vc.status?.kubeconfigSecretRef).toEqual({
      name: kubeconfigSecretName(vc.metadata),
      key: 'kubeconfig',
    });
    const secret = await host().getSecret(namespace, 'tenant1-kubeconfig');
    expect(secret?.data?.kubeconfig).toBe(vc.spec.kubeconfig);
    expect(vc.metadata.finalizers).toContain(FINALIZER);
    const conditions = Object.fromEntries((vc.status?.conditions ?? []).map((c) => [c.type, c.status]));
    expect(conditions).toMatchObject({
      Ready: 'True',
      EtcdReady: 'True',
      APIServerReady: 'True',
      KubeconfigPublished: 'True',
    });

    // clusterTree runs with Node.js's compile cache enabled in the operator's state directory
    // (Node.js makes the directory when it enables the cache).
    expect(readdirSync(join(stateDir, 'cache', 'node-compile')).length).toBeGreaterThan(0);

    const kubeconfig = await tenantKubeconfig(stateDir, vc);
    const namespaces = await kubectl(kubeconfig, 'get', 'ns', '-o', 'name');
    expect(namespaces).toContain('namespace/kube-system');
    await kubectl(kubeconfig, 'create', 'ns', 'team-a');
    expect(await kubectl(kubeconfig, 'get', 'ns', 'team-a', '-o', 'name')).toContain('namespace/team-a');
    const whoami = await kubectl(kubeconfig, 'auth', 'whoami', '-o', 'json');
    expect(
      (JSON.parse(whoami) as { status: { userInfo: { username: string } } }).status.userInfo.username,
    ).toBe('kubernetes-admin');
    // The tenant is its own cluster: its namespace does not exist on the host.
    await expect(host().core.readNamespace({ name: 'team-a' })).rejects.toThrow();

    // The controller-manager works: the tenant's new namespace gets its root CA configmap.
    await eventually('kube-root-ca.crt in team-a', async () =>
      (await kubectl(kubeconfig, 'get', 'configmap', '-n', 'team-a', '-o', 'name')).includes(
        'kube-root-ca.crt',
      ),
    );

    // kubectl get vc shows the printer columns.
    const table = await kubectl(
      process.env.KVC_HOST_KUBECONFIG ?? (await import('vitest')).inject('hostKubeconfig'),
      'get',
      'vc',
      '-n',
      namespace,
    );
    expect(table).toMatch(/NAME\s+PHASE\s+READY\s+NODES\s+CPU\s+MEMORY\s+AGE/);
    expect(table).toMatch(/tenant1\s+Ready\s+True/);

    // The kosmos-vc CLI shows it and hands out its kubeconfig, no jsonpath or base64 needed.
    const cli = (...args: string[]) => kosmosVc(args);
    expect(await cli('get', '-n', namespace)).toMatch(
      /NAME\s+PHASE\s+NODES\s+CPU\s+MEMORY\s+ENDPOINT\s+AGE\n/,
    );
    expect(await cli('get', `${namespace}/tenant1`)).toMatch(
      new RegExp(
        `tenant1\\s+Ready\\s+0\\s+0\\s+0(Gi)?\\s+${vc.status!.apiServerEndpoint!.replace(/[.]/g, '\\.')}\\s`,
      ),
    );
    const described = await cli('describe', 'tenant1', '-n', namespace);
    expect(described).toContain(`Workflow:         ${vc.status!.workflowId}`);
    expect(described).toMatch(/APIServerReady\s+True\s+Succeeded/);
    const fromCli = join(stateDir, 'tenant1-from-cli.conf');
    await writeFile(fromCli, await cli('kubeconfig', `${namespace}/tenant1`));
    expect(await kubectl(fromCli, 'get', 'ns', 'team-a', '-o', 'name')).toContain('namespace/team-a');
    const missing = (await cli('kubeconfig', `${namespace}/no-such-tenant`).catch((e: unknown) => e)) as {
      code?: number;
      stderr?: string;
    };
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`VirtualCluster ${namespace}/no-such-tenant not found`);

    // The operator's /metrics: the steps it ran, timed, and the tenant counted as Ready.
    // (The phase is the watcher's cache: eventually the status just read.)
    const metrics = await eventually('the Ready tenant counted on /metrics', async () => {
      const text = await (await fetch(operator.metricsUrl!)).text();
      return /^kosmos_vc_virtualclusters\{phase="Ready"\} 1$/m.test(text) ? text : undefined;
    });
    for (const step of ['allocate', 'issueCertificates', 'startEtcd', 'startApiserver', 'publishKubeconfig'])
      expect(metrics).toMatch(
        new RegExp(
          `^kosmos_vc_activity_duration_seconds_count\\{activity="${step}",outcome="success"\\} [1-9]`,
          'm',
        ),
      );
    expect(metrics).toMatch(/^kosmos_vc_virtualclusters\{phase="Failed"\} 0$/m);

    // The workflow is findable by the VirtualCluster's namespace and name.
    const found: string[] = [];
    await eventually(
      'workflow visible by search attributes',
      async () => {
        found.length = 0;
        const query = `${searchAttributes.namespace.name}="${namespace}" AND ${searchAttributes.name.name}="tenant1"`;
        for await (const wf of operator.client.workflow.list({ query })) found.push(wf.workflowId);
        return found.length === 1;
      },
      30_000,
    );
    expect(found[0]).toBe(workflowIdFor({ namespace, name: 'tenant1', uid: vc.metadata.uid }));
  });

  it('the Temporal Web UI, in a headless browser, finds the tenant by its search attributes and shows one activity per step', async () => {
    const vc = (await host().getVirtualCluster({ namespace, name: 'tenant1' }))!;
    const workflowId = workflowIdFor({ namespace, name: 'tenant1', uid: vc.metadata.uid });
    const browser = await chromium
      .launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
      .catch((e: unknown) => {
        throw new Error(
          `no headless ${CHROMIUM} (scripts/setup.sh --tests installs Debian's chromium): ${String(e)}`,
        );
      });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      // The list filtered by the tenant's namespace and name, as an operator would search.
      const query = `${searchAttributes.namespace.name}="${namespace}" AND ${searchAttributes.name.name}="tenant1"`;
      await page.goto(
        `${inject('temporalUiUrl')}/namespaces/default/workflows?query=${encodeURIComponent(query)}`,
      );
      const rows = page.locator('a[href*="/workflows/virtualcluster"]');
      await rows.first().waitFor({ timeout: 30_000 });
      // Only this tenant's workflow matches (a row links to it more than once).
      const hrefs = new Set(
        await Promise.all((await rows.all()).map(async (l) => (await l.getAttribute('href')) ?? '')),
      );
      expect(
        [...hrefs].map((h) =>
          decodeURIComponent(h).split('/workflows/')[1]?.split('/').slice(0, 4).join('/'),
        ),
      ).toEqual([workflowId]);
      // Its first run holds the provisioning (a run continued-as-new starts Ready): open that one.
      const runs: { runId: string; startTime: Date }[] = [];
      for await (const wf of operator.client.workflow.list({ query: `WorkflowId="${workflowId}"` }))
        runs.push({ runId: wf.runId, startTime: wf.startTime });
      const first = runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime())[0]!;
      await page
        .locator(`a[href*="/${encodeURIComponent(workflowId)}/${first.runId}/"]`)
        .first()
        .click();
      await page.getByRole('heading', { name: 'Event History' }).waitFor({ timeout: 30_000 });
      // The timeline labels each activity by its type: every step once, nothing undone.
      for (const step of STEP_NAMES) {
        const label = page.locator('svg text').getByText(step, { exact: true });
        await label.first().waitFor({ timeout: 30_000 });
        expect(await label.count(), step).toBe(1);
      }
      expect(await page.locator('svg text').getByText('release', { exact: true }).count()).toBe(0);
      await page.screenshot({ path: process.env.KVC_UI_SCREENSHOT ?? join(stateDir, 'temporal-ui.png') });
    } finally {
      await browser.close();
    }
  });

  it('removes every process, port, directory and Secret of a deleted tenant, then the object', async () => {
    await createVirtualCluster(namespace, 'doomed');
    await waitForPhase(namespace, 'doomed', 'Ready');
    const allocation = await allocationOf('doomed');
    // One of each control-plane component, and the tenant's DNS where pods can reach it (a real
    // node runs); its clusterTree in the worker's shared process.
    expect(
      processesMentioning(allocation.dir)
        .map((p) => p.exe)
        .sort(),
    ).toEqual([...(inject('nodeAddress') ? ['coredns'] : []), ...TENANT_PROCESSES]);
    expect((await runningClusterTree(operator, allocation.id))?.sharedBy).toBeGreaterThanOrEqual(1);

    await deleteVirtualCluster(namespace, 'doomed');
    await waitForGone(namespace, 'doomed');
    expect(processesMentioning(allocation.dir)).toEqual([]);
    expect(await runningClusterTree(operator, allocation.id)).toBeUndefined();
    expect(pathExists(allocation.dir)).toBe(false);
    for (const port of Object.values(allocation.ports)) expect(await canBind(port)).toBe(true);
    expect(await host().getSecret(namespace, 'doomed-kubeconfig')).toBeUndefined();
  });

  it('delivers a spec change to the running workflow and refuses changes to immutable fields', async () => {
    const before = (await host().getVirtualCluster({ namespace, name: 'tenant1' }))!;
    await host().custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace,
        name: 'tenant1',
        body: { spec: { promoteResources: { resources: { cpu: '2' } } } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const after = await eventually('observedGeneration to follow the new generation', async () => {
      const vc = await host().getVirtualCluster({ namespace, name: 'tenant1' });
      return vc &&
        vc.metadata.generation! > before.metadata.generation! &&
        vc.status?.observedGeneration === vc.metadata.generation
        ? vc
        : undefined;
    });
    expect(after.status?.phase).toBe('Ready');

    const refused = async (name: string, spec: Record<string, unknown>, message: string) => {
      const e: unknown = await host()
        .custom.patchNamespacedCustomObject(
          { group: GROUP, version: VERSION, plural: PLURAL, namespace, name, body: { spec } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        )
        .then(
          () => undefined,
          (err: unknown) => err,
        );
      expect(e).toMatchObject({ code: 422 });
      expect(apiMessage(e)).toContain(message);
    };
    await refused('tenant1', { serviceCIDR: '10.100.0.0/16' }, 'serviceCIDR is immutable');
    await refused('tenant1', { certSANs: ['late.example.com'] }, 'certSANs is immutable');
    await refused('tenant1', { apiServer: { expose: { type: 'NodePort' } } }, 'apiServer is immutable');
    // Changed or removed where it was set (a ClusterIP, as the default: the tenant is deleted
    // at once, whatever the operator made of it by then).
    await createVirtualCluster(namespace, 'exposed', { apiServer: { expose: { type: 'ClusterIP' } } });
    try {
      await refused('exposed', { apiServer: { expose: { type: 'NodePort' } } }, 'apiServer is immutable');
      await refused('exposed', { apiServer: null }, 'apiServer is immutable');
    } finally {
      await deleteVirtualCluster(namespace, 'exposed');
      await waitForGone(namespace, 'exposed');
    }
  });

  it('serves VirtualClusters created and deleted while the watch is stalled (periodic relist)', async () => {
    // Stop the informer behind the watcher's back: only the relist (5 s in tests) can notice.
    await (operator.watcher as unknown as { informer: { stop(): Promise<void> } }).informer.stop();
    await createVirtualCluster(namespace, 'unwatched');
    await waitForPhase(namespace, 'unwatched', 'Ready');
    await deleteVirtualCluster(namespace, 'unwatched');
    await waitForGone(namespace, 'unwatched');
  });

  it('sleeps on spec.sleep: no process of the tenant runs, its data stays; wakes with the same objects', async () => {
    await createVirtualCluster(namespace, 'sleeper');
    const vc = await waitForPhase(namespace, 'sleeper', 'Ready');
    const kubeconfig = await tenantKubeconfig(stateDir, vc);
    await kubectl(kubeconfig, 'create', 'configmap', 'kept', '--from-literal=answer=42');
    const allocation = await allocationOf('sleeper');
    expect(processesMentioning(allocation.dir).map((p) => p.exe)).toEqual(
      expect.arrayContaining(TENANT_PROCESSES),
    );
    const sleep = (on: boolean) => setSleep(namespace, 'sleeper', on);

    await sleep(true);
    const asleep = await eventually('sleeper asleep', async () => {
      const v = await host().getVirtualCluster({ namespace, name: 'sleeper' });
      return v?.status?.phase === 'Sleeping' && v.status.reason === 'Asleep' ? v : undefined;
    });
    expect(asleep.status?.conditions?.find((c) => c.type === 'APIServerReady')?.status).toBe('False');
    // Not one process of the tenant (control plane, clusterTree, DNS); its data and kubeconfig stay.
    await eventually(
      'no process of the sleeping tenant',
      () => processesMentioning(allocation.dir).length === 0,
    );
    expect(await runningClusterTree(operator, allocation.id)).toBeUndefined();
    expect(pathExists(join(allocation.dir, 'etcd'))).toBe(true);
    expect((await host().getSecret(namespace, 'sleeper-kubeconfig'))?.data?.kubeconfig).toBe(
      vc.spec.kubeconfig,
    );
    await expect(kubectl(kubeconfig, 'get', 'ns', '--request-timeout=3s')).rejects.toThrow();
    // The certificates in the state directory are a copy of the host namespace's Secret (ADR 14):
    // lost here, as on a worker with another state directory, they come back from it, CAs and
    // all, so the published kubeconfig keeps working after the wake (a new set would not).
    const ref = refOf(vc);
    for (const entry of await readdir(allocation.dir))
      if (entry === 'kubeconfigs' || entry.startsWith('pki'))
        await rm(join(allocation.dir, entry), { recursive: true });

    await sleep(false);
    const awake = await waitForPhase(namespace, 'sleeper', 'Ready');
    const stored = (await host().getSecret(hostNamespace(ref), PKI_SECRET))!;
    expect(stored.metadata?.annotations?.[PKI_CHECKSUM_ANNOTATION]).toBe(
      setChecksum((await readSet(join(allocation.dir, 'pki')))!),
    );
    expect(awake.status?.apiServerEndpoint).toBe(vc.status?.apiServerEndpoint);
    // The same objects, through the same kubeconfig; every process back, clusterTree and DNS too.
    expect(await kubectl(kubeconfig, 'get', 'configmap', 'kept', '-o', 'jsonpath={.data.answer}')).toBe('42');
    expect(processesMentioning(allocation.dir).map((p) => p.exe)).toEqual(
      // (A tenant has its own CoreDNS where pods can reach it: with a real node.)
      expect.arrayContaining([...TENANT_PROCESSES, ...(inject('nodeAddress') ? ['coredns'] : [])]),
    );
    expect(await runningClusterTree(operator, allocation.id)).toBeDefined();
    await deleteVirtualCluster(namespace, 'sleeper');
    await waitForGone(namespace, 'sleeper');
  });

  it('restarts a tenant component that crashes', async () => {
    const allocation = await allocationOf('tenant1');
    // By default the API server runs in kube-control-plane with its controller-manager and scheduler.
    const api = 'kube-control-plane';
    const before = processesMentioning(allocation.dir).find((p) => p.exe === api)!;
    process.kill(before.pid, 'SIGKILL');
    const after = await eventually('a new kube-control-plane', () =>
      processesMentioning(allocation.dir).find((p) => p.exe === api && p.pid !== before.pid),
    );
    const vc = (await host().getVirtualCluster({ namespace, name: 'tenant1' }))!;
    const creds = credentialsOf(Buffer.from(vc.spec.kubeconfig!, 'base64').toString());
    await eventually(
      'the restarted apiserver to answer',
      async () => (await statusAs(creds.server, creds.caPem, creds)) === 200,
    );
    expect(
      processesMentioning(allocation.dir)
        .filter((p) => p.exe === api)
        .map((p) => p.pid),
    ).toEqual([after.pid]);
  });

  it('tears down a tenant whose object was removed around the finalizer', async () => {
    // With the watch stalled, only the relist can notice; it finds a running workflow whose
    // object is gone (what `kubectl patch ... finalizers: null` followed by delete leaves).
    await (operator.watcher as unknown as { informer: { stop(): Promise<void> } }).informer.stop();
    const vc = await createVirtualCluster(namespace, 'forced');
    await waitForPhase(namespace, 'forced', 'Ready');
    const allocation = await allocationOf('forced');
    // The operator may still write the object after Ready (a status update): a conflict means
    // read it again, as kubectl would.
    await eventually('the finalizer removed', async () => {
      const current = (await host().getVirtualCluster({ namespace, name: 'forced' }))!;
      await host().setFinalizers(
        { namespace, name: 'forced', uid: vc.metadata.uid },
        [],
        current.metadata.resourceVersion!,
      );
      return true;
    });
    await deleteVirtualCluster(namespace, 'forced');
    await waitForGone(namespace, 'forced');
    // Processes stop first, then release removes the directory: wait for the end of teardown.
    await eventually(
      'the orphaned tenant to be torn down',
      () => !pathExists(allocation.dir) && processesMentioning(allocation.dir).length === 0,
    );
  });
});
