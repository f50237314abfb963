/**
 * The Helm chart (deploy/helm/kosmos-vc, ADR 14): `helm lint` and `helm template` pass, the CRD
 * is the operator's own, the ClusterRole grants no wildcard and no cluster-admin, the values that
 * are required say so; then `helm install` into the embedded host runs the operator from its
 * image as pods on the real node, with a Temporal dev server it reaches on the node's address, and
 * that in-cluster operator provisions a tenant whose kubeconfig works from this machine.
 */
import type { V1ClusterRole, V1Deployment } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { hostNamespace } from '../../src/clustertree/naming.js';
import { NodeNet } from '../../src/node/realNode.js';
import { repoRoot, resolveBinaries, type Binaries } from '../../src/runtime/binaries.js';
import { TEMPORAL_OWNER, startTemporalDevServer } from '../../src/runtime/embedded.js';
import { PortAllocator } from '../../src/runtime/ports.js';
import { ProcessRuntime } from '../../src/runtime/processRuntime.js';
import { CONTROL_PLANE_LABEL, operatorImage, ownerLabel } from '../../src/runtime/podWorkload.js';
import { tenantId } from '../../src/activities/index.js';
import {
  createNamespace,
  createVirtualCluster,
  deleteVirtualCluster,
  eventually,
  host,
  kubectl,
  newStateDir,
  refOf,
  tenantKubeconfig,
  testLogger,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

const run = promisify(execFile);
const chart = join(repoRoot(), 'deploy', 'helm', 'kosmos-vc');
const realNode = inject('realNode');
let binaries: Binaries;
let helm: string;

/** `helm <args>` against the embedded host; rejects with helm's own message. */
async function helmRun(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run(helm, args, {
      timeout: 120_000,
      env: { ...process.env, KUBECONFIG: inject('hostKubeconfig'), HELM_CACHE_HOME: join(stateDir, 'helm') },
      maxBuffer: 16 * 2 ** 20,
    });
    return stdout;
  } catch (e) {
    throw new Error(`helm ${args[0]}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
  }
}

const required = ['--set', 'temporal.address=temporal.example:7233', '--set', 'image.tag=0123456789abcdef'];
let stateDir: string;

beforeAll(async () => {
  binaries = await resolveBinaries();
  if (!binaries.helm) throw new Error('no helm: npm run setup builds it');
  helm = binaries.helm;
  stateDir = await newStateDir();
});

describe('the Helm chart', () => {
  it('lints, renders least-privilege RBAC and the CRD the operator applies, and names what is required', async () => {
    expect(await helmRun('lint', chart, ...required)).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    const docs = parseAllDocuments(
      await helmRun('template', 'kvc', chart, '--namespace', 'kosmos-system', '--include-crds', ...required),
    ).map((d) => d.toJS() as { kind: string; metadata: { name: string } });
    expect(docs.map((d) => d.kind).sort()).toEqual([
      'ClusterRole',
      'ClusterRoleBinding',
      'CustomResourceDefinition',
      'Deployment',
      'PodDisruptionBudget',
      'ServiceAccount',
    ]);
    // The CRD is the one the operator applies itself (`kosmos-vc up`): one file's content.
    const crd = docs.find((d) => d.kind === 'CustomResourceDefinition');
    const own = parseAllDocuments(
      await readFile(join(repoRoot(), 'config', 'crd', 'virtualclusters.kosmos.io.yaml'), 'utf8'),
    )[0]!.toJS() as unknown;
    expect(crd).toEqual(own);
    // No wildcard anywhere; writes of RBAC objects only by name, but the per-tenant bindings.
    const role = docs.find((d) => d.kind === 'ClusterRole') as unknown as V1ClusterRole;
    for (const r of role.rules ?? []) {
      for (const v of [...(r.verbs ?? []), ...(r.resources ?? []), ...(r.apiGroups ?? [])])
        expect(v).not.toBe('*');
      if (r.apiGroups?.includes('rbac.authorization.k8s.io') && !r.resources?.includes('clusterrolebindings'))
        expect(r.resourceNames?.length, JSON.stringify(r)).toBeGreaterThan(0);
      if (r.verbs?.some((v) => v === 'escalate' || v === 'bind'))
        expect(r.resourceNames?.length).toBeGreaterThan(0);
    }
    const deployment = docs.find((d) => d.kind === 'Deployment') as unknown as V1Deployment;
    expect(deployment.spec!.replicas).toBe(2);
    const container = deployment.spec!.template.spec!.containers[0]!;
    expect(container.image).toBe('localhost/kosmos-vc/operator:0123456789abcdef');
    const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      TEMPORAL_ADDRESS: 'temporal.example:7233',
      KOSMOS_VC_RUNTIME: 'kubernetes',
      KOSMOS_VC_EXPOSE_TYPES: 'NodePort,LoadBalancer',
    });
    // clusterTree's image is the operator's own unless the values name another.
    expect(env.KOSMOS_VC_IMAGES).toContain('clustertree=localhost/kosmos-vc/operator:0123456789abcdef');
    expect(env.KOSMOS_VC_IMAGES).toContain('kube-apiserver=registry.k8s.io/kube-apiserver:');

    await expect(helmRun('template', 'kvc', chart, '--set', 'image.tag=x')).rejects.toThrow(
      /temporal\.address is required/,
    );
    await expect(helmRun('template', 'kvc', chart, '--set', 'temporal.address=t:1')).rejects.toThrow(
      /image\.tag is required/,
    );
  });
});

describe('the operator installed by the chart', () => {
  let runtime: ProcessRuntime;
  let namespace: string;
  let release: string;
  let installed = false;
  let temporalAddress: string;
  let relay: Server;

  beforeAll(async () => {
    if (!realNode) throw new Error('no real node on this machine (see the global setup log)');
    namespace = await createNamespace('chart');
    release = `kvc-${namespace.slice(-6)}`;
    // A Temporal of its own, which the operator's pods reach on the node's address over the
    // bridge: a TCP relay there to its frontend on loopback (the dev server's services call one
    // another on loopback, so it cannot listen on the bridge's address alone). Its ports are in
    // the range the node keeps to loopback and the bridge.
    runtime = new ProcessRuntime({ root: join(stateDir, 'runtime'), logger: testLogger });
    const [port, httpPort, relayPort] = (await new PortAllocator(
      join(inject('stateRoot'), 'ports.json'),
    ).allocate(`chart-temporal-${namespace}`, 3)) as [number, number, number];
    const temporal = await startTemporalDevServer({ runtime, binaries, port, httpPort });
    relay = createServer((inbound) => {
      const outbound = connect(port, '127.0.0.1');
      inbound.pipe(outbound).pipe(inbound);
      const close = () => {
        inbound.destroy();
        outbound.destroy();
      };
      inbound.on('error', close);
      outbound.on('error', close);
    });
    await new Promise<void>((resolve, reject) => {
      relay.once('error', reject);
      relay.listen(relayPort, NodeNet.nodeIP, resolve);
    });
    expect(temporal.address).toBe(`127.0.0.1:${port}`);
    temporalAddress = `${NodeNet.nodeIP}:${relayPort}`;
  }, 120_000);
  afterAll(async () => {
    // A tenant a failure left behind goes while the chart's operator still runs (its finalizer
    // would hold the namespace, and its pods the real node, for the tests after this one).
    if (installed) {
      await deleteVirtualCluster(namespace, 'incluster').catch(() => undefined);
      await waitForGone(namespace, 'incluster', 240_000).catch(() => undefined);
    }
    if (installed)
      await helmRun('uninstall', release, '--namespace', namespace, '--wait').catch(() => undefined);
    await host()
      .core.deleteNamespace({ name: namespace })
      .catch(() => undefined);
    relay?.close();
    await runtime?.remove(TEMPORAL_OWNER);
  }, 420_000);

  it('runs as pods on the real node and provisions a tenant', async () => {
    const image = (await operatorImage())!;
    const [repository, tag] = image.split(':') as [string, string];
    const set = (k: string, v: string) => ['--set-string', `${k}=${v}`];
    await helmRun(
      'install',
      release,
      chart,
      '--namespace',
      namespace,
      '--skip-crds',
      ...set('image.repository', repository),
      ...set('image.tag', tag),
      ...set('temporal.address', temporalAddress),
      ...set('temporal.taskQueue', `chart-${namespace}`),
      ...set('watchNamespace', namespace),
      ...set('nodeSelector.kubernetes\\.io/hostname', realNode),
      '--set-json',
      'tolerations=[{"operator":"Exists"}]',
      ...set('controlPlane.nodeSelector.kubernetes\\.io/hostname', realNode),
      '--set',
      'controlPlane.tolerateAllTaints=true',
      ...set('network.nodeAddress', NodeNet.nodeIP),
      ...set('network.podCIDR', NodeNet.clusterCIDR),
      '--set-json',
      `extraEnv=${JSON.stringify([
        { name: 'KOSMOS_VC_ETCD_UNSAFE_NO_FSYNC', value: 'true' },
        { name: 'KOSMOS_VC_HOSTS_IMAGE', value: binaries.node!.toolsImage },
      ])}`,
      '--wait',
      '--timeout',
      '3m',
    );
    installed = true;
    const operators = (
      await host().core.listNamespacedPod({
        namespace,
        labelSelector: `app.kubernetes.io/instance=${release}`,
      })
    ).items;
    expect(operators).toHaveLength(2);
    for (const p of operators) expect(p.spec?.nodeName).toBe(realNode);

    await createVirtualCluster(namespace, 'incluster', {
      promoteResources: { resources: { cpu: 1, memory: '2Gi' } },
    });
    const vc = await waitForPhase(namespace, 'incluster', 'Ready', 300_000).catch(async (e: Error) => {
      // What the operator's pods said, for whoever reads the failure.
      const logs = await Promise.all(
        operators.map((p) =>
          host()
            .core.readNamespacedPodLog({ name: p.metadata!.name!, namespace, tailLines: 40 })
            .catch((err: unknown) => String(err)),
        ),
      );
      throw new Error(`${e.message}\n${logs.join('\n---\n')}`);
    });
    const kubeconfig = await tenantKubeconfig(stateDir, vc);
    await kubectl(kubeconfig, 'create', 'namespace', 'from-the-chart');
    expect(await kubectl(kubeconfig, 'get', 'namespace', 'from-the-chart', '-o', 'name')).toContain(
      'namespace/from-the-chart',
    );
    const id = tenantId(refOf(vc));
    const pods = await eventually('six control-plane pods Running', async () => {
      const now = (
        await host().core.listNamespacedPod({
          namespace: hostNamespace(refOf(vc)),
          labelSelector: `${CONTROL_PLANE_LABEL}=${ownerLabel(id)}`,
        })
      ).items;
      return now.length === 6 && now.every((p) => p.status?.phase === 'Running') ? now : undefined;
    });
    expect(
      pods.find((p) => p.metadata!.labels!['app.kubernetes.io/name'] === 'clustertree')?.spec?.containers[0]
        ?.image,
    ).toBe(image);

    await deleteVirtualCluster(namespace, 'incluster');
    await waitForGone(namespace, 'incluster', 240_000);
  }, 600_000);
});
