/**
 * The clusterTree side of a tenant: its credentials and process (deployClusterTree and its
 * undo, removeClusterTree) and sleep; what it is given to serve is ./promotion.ts.
 *
 * clusterTree gets least privilege on both sides (docs/adr/0006-clustertree.md):
 * - in the tenant, a client certificate for the user `kosmos-vc:clustertree` bound to a
 *   ClusterRole with what a kubelet-like agent needs (nodes, pod status, leases, the objects it
 *   mirrors, service-account tokens); never system:masters;
 * - on the host, the token of a service account in the tenant's host namespace, bound to a Role
 *   in that namespace and to read-only access to nodes. The operator, not clusterTree, labels and
 *   taints the host nodes it promotes. No host credential is written anywhere the tenant reads.
 */
import { RbacAuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/activity';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ignoreStatus } from '../api/kubeClient.js';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import type { ClusterTreeConfigInput } from '../clustertree/config.js';
import { hostNamespace, promotionTaint } from '../clustertree/naming.js';
import { PkiFile, certPath, ensureCurrentFiles, keyPath, loadPair } from '../pki/controlPlanePki.js';
import { renderKubeconfig } from '../pki/kubeconfig.js';
import {
  CLUSTERTREE_SERVICE,
  POD_PATHS,
  apiserverURL,
  pkiDir,
  type ControlPlaneLayout,
} from '../runtime/controlPlane.js';
import { ensureOperatorKubeconfig } from '../runtime/kubeconfigs.js';
import { FILE_SOURCES, storeFiles } from '../runtime/podWorkload.js';
import { CLUSTERTREE_NODE_FLAGS } from '../runtime/nodeFlags.js';
import type { PortAllocator } from '../runtime/ports.js';
import { filesDigestEnv, type ComponentSpec, type ControlPlaneRuntime } from '../runtime/types.js';
import type { Logger } from '../worker/logger.js';
import { CLUSTERTREE_USER, HOST_SA, NODE_READER, hostRbac, tenantRbac } from './clusterTreeRbac.js';
import type { HostCluster } from './hostCluster.js';
import { QUOTA_NAME, VIRTUAL_NODE } from './promotion.js';
import { apply, tenantAdmin } from './tenantAdmin.js';
import { defaultNamespaceReady } from './defaultNamespace.js';
import { readinessPauses } from '../runtime/probe.js';
import { both, reportProgress, until } from './wait.js';
import { TENANT_API_PORT, isolationPolicy, tenantPodSecurity, type TenantNetwork } from './tenantNetwork.js';
import { FailureType, type DeployClusterTreeInput, type StepInput } from './types.js';

/** clusterTree as a pod: where its files are mounted, its ports (status and probes, the kubelet endpoint). */
export const CLUSTERTREE_POD = {
  dir: '/etc/kosmos-vc/clustertree',
  ports: { status: 8080, kubelet: 10250 },
} as const;

/**
 * A clusterTree process of this machine: one tenant's (`--config=<file>`), or the shared one's
 * (`--tenants=<dir>`, src/runtime/sharedClusterTree.ts), which is made from a tenant's.
 */
export function clusterTreeProcess(
  entry: string,
  arg: string,
  compileCacheDir?: string,
): Pick<ComponentSpec, 'name' | 'command' | 'args' | 'env'> {
  return {
    name: 'clustertree',
    command: process.execPath,
    args: [...CLUSTERTREE_NODE_FLAGS, entry, arg],
    ...(compileCacheDir ? { env: { NODE_COMPILE_CACHE: compileCacheDir } } : {}),
  };
}

/** Where the compiled code of clusterTree's modules is kept, under a worker's state directory. */
export const compileCacheDirOf = (stateDir: string): string => join(stateDir, 'cache', 'node-compile');

/**
 * A tenant node's health is its host node's (ADR 12, decision 19): its controller-manager runs no
 * node-lifecycle controller, clusterTree writes the host node's health taints. Nothing in the
 * tenant judges a node by its Lease then: clusterTree renews it every 60 s for 240 s (a kubelet's
 * ratio, a quarter, for a sixth of its writes); the Lease still says that clusterTree serves the
 * node, as `kubectl describe node` shows. Nor does anything read a node status's heartbeat
 * times: with `nodeHealthFromHost` clusterTree writes a node's status when its host node's
 * changes, not again unchanged every 5 minutes (ADR 12, decision 20). Written into each
 * configuration this step makes in a pass that started the tenant's current controller-manager
 * first (not the clusterTree-only pass of a workflow from before clusterTree:
 * `nodeHealthFromHost: false` in its input). A configuration without it keeps clusterTree's
 * defaults (no health taints written, Leases every 10 s for 40 s, the status every 5 minutes),
 * which a tenant controller-manager from before that decision, resumed as it was recorded, needs.
 */
export const TENANT_NODE_HEALTH = {
  nodeHealthFromHost: true,
  heartbeatIntervalMs: 60_000,
  leaseDurationSeconds: 240,
} as const;

/** What of TENANT_NODE_HEALTH a deployClusterTree input's configuration gets: all of it, or none. */
export const nodeHealthConfig = (input: DeployClusterTreeInput): Partial<typeof TENANT_NODE_HEALTH> =>
  input.nodeHealthFromHost === false ? {} : TENANT_NODE_HEALTH;

export interface ClusterTreeTimings {
  heartbeatIntervalMs?: number;
  nodeStatusIntervalMs?: number;
  resyncIntervalMs?: number;
  leaseDurationSeconds?: number;
}

export interface ClusterTreeDeps {
  host: HostCluster;
  runtime: ControlPlaneRuntime;
  ports: PortAllocator;
  logger: Logger;
  /** The compiled clusterTree entry point (dist/src/clustertree/main.js). */
  entry: () => Promise<string>;
  /**
   * Node.js keeps the compiled code of clusterTree's modules here (NODE_COMPILE_CACHE), shared by
   * every clusterTree of the worker's state directory: a start costs ~0.2 CPU-seconds less (ADR 12).
   */
  compileCacheDir?: string;
  /** The tenant's layout, its certificate files and kubeconfigs in place (the Secret's, ADR 14). */
  layoutOf: (input: StepInput) => Promise<ControlPlaneLayout>;
  /** Names the tenant's clusterTree and DNS in the runtime, their ports and its host objects. */
  tenantId: (ref: VirtualClusterRef) => string;
  /** The runtime owner of its control plane: the tenant's id, or the warm-pool slot's it claimed. */
  controlPlaneOwner: (ref: VirtualClusterRef) => Promise<string>;
  tenantDir: (ref: VirtualClusterRef) => string;
  readinessTimeoutMs: number;
  timings?: ClusterTreeTimings;
  /** Tenant API and DNS for pods; undefined where no host pod can reach this machine. */
  network?: TenantNetwork;
  /** Tenants may ask for spec.podSecurity: privileged (root on their promoted nodes). */
  allowPrivilegedTenants?: boolean;
  /** An image with `sh` and `sed` on the host nodes: puts a pod's tenant FQDN in /etc/hosts. */
  hostsImage?: string;
  /** The namespace of the operator's pods: a tenant in pods admits connections from it. */
  operatorNamespace?: string;
  /** Throws for a tenant in pods when this worker runs no pods (KOSMOS_VC_RUNTIME). */
  refuseWithoutPods: (ref: VirtualClusterRef, allocation: StepInput['allocation']) => void;
  /** A process that exited before it was ready: the step's failure, as the control plane's. */
  startFailure: (e: unknown, component: string) => unknown;
}

/** The host API server's address and CA, as the operator reaches it. */
async function hostEndpoint(kc: KubeConfig): Promise<{ server: string; caPem: string }> {
  const cluster = kc.getCurrentCluster();
  if (!cluster)
    throw ApplicationFailure.nonRetryable(
      'the host kubeconfig has no current cluster',
      FailureType.InvalidSpec,
    );
  const caPem = cluster.caData
    ? Buffer.from(cluster.caData, 'base64').toString('utf8')
    : cluster.caFile
      ? await readFile(cluster.caFile, 'utf8')
      : '';
  return { server: cluster.server, caPem };
}

export function createClusterTreeActivities(deps: ClusterTreeDeps) {
  const hostKc = deps.host.kubeConfig;
  const hostCore = deps.host.core;
  const hostRbacApi = hostKc.makeApiClient(RbacAuthorizationV1Api);
  const hostObjects = deps.host.objects;
  const log = (ref: VirtualClusterRef) => deps.logger.child({ vc: `${ref.namespace}/${ref.name}` });
  const portOwner = (ref: VirtualClusterRef) => `${deps.tenantId(ref)}/clustertree`;

  async function hostToken(ns: string): Promise<string> {
    let token = '';
    // The host's token controller fills it in within milliseconds: asked again soon for the
    // first second (a deploy waited 300 ms for it one time in five), then every 300 ms.
    await until(
      'the clusterTree host token',
      30_000,
      async () => {
        const s = await hostCore
          .readNamespacedSecret({ name: `${HOST_SA}-token`, namespace: ns })
          .catch(ignoreStatus(404));
        token = s?.data?.token ? Buffer.from(s.data.token, 'base64').toString('utf8') : '';
        return token !== '';
      },
      readinessPauses(300),
    );
    return token;
  }

  /** clusterTree's kubeconfig for the tenant, from its leaf in the tenant's PKI. */
  async function tenantCredentials(l: ControlPlaneLayout): Promise<string> {
    const pki = pkiDir(l);
    const [ca, leaf] = await Promise.all([loadPair(pki, PkiFile.ca), loadPair(pki, PkiFile.clusterTree)]);
    return renderKubeconfig({
      clusterName: l.id,
      server: apiserverURL(l),
      caPem: ca.certPem,
      userName: CLUSTERTREE_USER,
      certPem: leaf.certPem,
      keyPem: leaf.keyPem,
    });
  }

  /**
   * The tenant nodes' kubelet endpoint: clusterTree serves it on the operator's machine, next to
   * the tenant apiserver that calls it, with its serving certificate from the tenant's PKI.
   */
  function kubeletEndpoint(l: ControlPlaneLayout, port: number) {
    const pki = pkiDir(l);
    // Tenant apiservers prefer InternalDNS (controlPlane.ts): the endpoint goes there.
    return {
      address: '127.0.0.1',
      port,
      certFile: certPath(pki, PkiFile.clusterTreeKubelet),
      keyFile: keyPath(pki, PkiFile.clusterTreeKubelet),
      clientCAFile: certPath(pki, PkiFile.ca),
      addressType: 'InternalDNS' as const,
    };
  }

  /** The tenant API address and DNS clusterTree gives host pods (starting the tenant's DNS). */
  async function podNetwork(input: StepInput, l: ControlPlaneLayout) {
    const net = deps.network;
    if (!net) return {};
    const clusterIP = await net.apiClusterIP(input.ref);
    const clusterDNS = await net.startDns(
      input.ref,
      deps.tenantId(input.ref),
      l,
      input.allocation.runtime === 'kubernetes',
    );
    return { ...(clusterIP ? { tenantApi: { clusterIP, port: TENANT_API_PORT } } : {}), clusterDNS };
  }

  /**
   * What clusterTree is given wherever it runs: its leaves (a tenant from before clusterTree's and
   * the operator's leaves were in its set gets them now), its RBAC on both sides, and the part of
   * its configuration that does not depend on where it runs.
   */
  async function prepare(input: DeployClusterTreeInput, l: ControlPlaneLayout) {
    const { ref } = input;
    const ns = hostNamespace(ref);
    await ensureCurrentFiles(pkiDir(l));
    await ensureOperatorKubeconfig(l);
    const pods = input.allocation.runtime === 'kubernetes';
    // The tenant's side and the host's are independent: written at once (two API servers).
    const [, podSecurity] = await both(
      apply(tenantAdmin(l).objects, tenantRbac()),
      (async () => {
        const podSecurity = await tenantPodSecurity(deps.host, ref, deps.allowPrivilegedTenants ?? false);
        await apply(hostObjects, [
          // A pod of clusterTree holds its service account's own token: no token Secret is made.
          ...hostRbac(ref, ns, podSecurity, !pods),
          isolationPolicy(ref, deps.network?.nodeAddress, pods ? deps.operatorNamespace : undefined),
        ]);
        return podSecurity;
      })(),
    );
    // Apply does not prune: a tenant whose clusterTree was a process before keeps that token.
    if (pods)
      await hostCore
        .deleteNamespacedSecret({ name: `${HOST_SA}-token`, namespace: ns })
        .catch(ignoreStatus(404));
    return {
      tenant: ref,
      hostNamespace: ns,
      serviceCIDR: l.serviceCIDR,
      endpointRanges: deps.network?.endpointRanges ?? [],
      ...(deps.network ? { virtualNodeAddress: deps.network.nodeAddress } : {}),
      // Immutable in the CRD: read from the object, so no workflow input had to change for it.
      podSecurity,
      ...(deps.hostsImage ? { hostsImage: deps.hostsImage } : {}),
      ...(await podNetwork(input, l)),
      virtualNodeName: VIRTUAL_NODE,
      quotaName: QUOTA_NAME,
      ...nodeHealthConfig(input),
      ...deps.timings,
    } satisfies Partial<ClusterTreeConfigInput>;
  }

  /**
   * clusterTree as a pod of the tenant's host namespace (ADR 14), from the operator's image: it
   * runs as its host service account (the pod's own token, no token Secret read), reads its
   * configuration and tenant kubeconfig from the Secret `kosmos-vc-clustertree` and its kubelet
   * endpoint's certificate from the set's Secret; the tenant's API server calls that endpoint
   * through the Service `clustertree`, whose name the certificate carries.
   */
  async function podSpec(input: DeployClusterTreeInput, l: ControlPlaneLayout): Promise<ComponentSpec> {
    const ns = hostNamespace(input.ref);
    const dir = CLUSTERTREE_POD.dir;
    const config: ClusterTreeConfigInput = {
      ...(await prepare(input, l)),
      tenantKubeconfig: `${dir}/tenant.conf`,
      listen: { address: '0.0.0.0', port: CLUSTERTREE_POD.ports.status },
      kubelet: {
        address: `${CLUSTERTREE_SERVICE}.${ns}.svc`,
        bind: '0.0.0.0',
        port: CLUSTERTREE_POD.ports.kubelet,
        certFile: `${POD_PATHS.pki}/${PkiFile.clusterTreeKubelet}.crt`,
        keyFile: `${POD_PATHS.pki}/${PkiFile.clusterTreeKubelet}.key`,
        clientCAFile: `${POD_PATHS.pki}/${PkiFile.ca}.crt`,
        addressType: 'InternalDNS',
      },
    };
    const files = {
      'config.json': JSON.stringify(config, null, 2),
      'tenant.conf': await tenantCredentials(l),
    };
    await storeFiles(deps.host.core, ns, FILE_SOURCES.clustertree.name, files);
    return {
      owner: deps.tenantId(input.ref),
      name: 'clustertree',
      tolerates: promotionTaint(input.ref),
      command: '/usr/local/bin/node',
      args: [...CLUSTERTREE_NODE_FLAGS, '/app/dist/src/clustertree/main.js', `--config=${dir}/config.json`],
      // clusterTree reads its files once: a change to them is a change of the pod (it rolls).
      env: filesDigestEnv(files),
      files: [
        { source: 'clustertree', path: dir, keys: ['config.json', 'tenant.conf'] },
        {
          source: 'pki',
          path: POD_PATHS.pki,
          keys: [
            `${PkiFile.ca}.crt`,
            `${PkiFile.clusterTreeKubelet}.crt`,
            `${PkiFile.clusterTreeKubelet}.key`,
          ],
        },
      ],
      ports: { ...CLUSTERTREE_POD.ports },
      namespace: ns,
      service: { name: CLUSTERTREE_SERVICE, port: CLUSTERTREE_POD.ports.kubelet },
      health: { scheme: 'HTTP', port: CLUSTERTREE_POD.ports.status, ready: '/readyz', live: '/healthz' },
      serviceAccount: HOST_SA,
      probe: { url: `http://localhost:${CLUSTERTREE_POD.ports.status}/readyz` },
    };
  }

  async function clusterTreeSpec(
    input: DeployClusterTreeInput,
    l: ControlPlaneLayout,
  ): Promise<ComponentSpec> {
    if (input.allocation.runtime === 'kubernetes') {
      deps.refuseWithoutPods(input.ref, input.allocation);
      return podSpec(input, l);
    }
    const { ref } = input;
    const ns = hostNamespace(ref);
    const [port, kubeletPort] = await deps.ports.allocate(portOwner(ref), 2);
    const dir = join(l.dir, 'clustertree');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const shared = await prepare(input, l);
    const tenantKubeconfig = join(l.dir, 'kubeconfigs', 'clustertree.conf');
    const tenantText = await tenantCredentials(l);
    await writeFile(tenantKubeconfig, tenantText, { mode: 0o600 });
    const { server, caPem } = await hostEndpoint(hostKc);
    const hostKubeconfig = join(dir, 'host.conf');
    const hostText = renderKubeconfig({
      clusterName: 'host',
      server,
      caPem,
      userName: `${HOST_SA}@${ns}`,
      token: await hostToken(ns),
    });
    await writeFile(hostKubeconfig, hostText, { mode: 0o600 });

    const config: ClusterTreeConfigInput = {
      ...shared,
      tenantKubeconfig,
      hostKubeconfig,
      listen: { address: '127.0.0.1', port: port! },
      kubelet: kubeletEndpoint(l, kubeletPort!),
    };
    const configFile = join(dir, 'config.json');
    const configText = JSON.stringify(config, null, 2);
    await writeFile(configFile, configText, { mode: 0o600 });
    const proc = clusterTreeProcess(await deps.entry(), `--config=${configFile}`, deps.compileCacheDir);
    return {
      owner: deps.tenantId(ref),
      ...proc,
      // It reads its files once: new ones (a renewal's certificate) restart it.
      env: {
        ...proc.env,
        ...filesDigestEnv({ 'config.json': configText, 'tenant.conf': tenantText, 'host.conf': hostText }),
      },
      probe: { url: `http://127.0.0.1:${port!}/readyz` },
    };
  }

  return {
    /** Credentials, RBAC on both sides, then the clusterTree process; waits until it has synced. */
    async deployClusterTree(
      input: DeployClusterTreeInput,
    ): Promise<{ hostNamespace: string; pid: number | undefined }> {
      const l = await deps.layoutOf(input);
      const spec = await clusterTreeSpec(input, l);
      let status: Awaited<ReturnType<ControlPlaneRuntime['ensure']>>;
      try {
        status = await deps.runtime.ensure(spec);
        await deps.runtime.waitReady(spec.owner, spec.name, deps.readinessTimeoutMs);
      } catch (e) {
        throw deps.startFailure(e, spec.name);
      }
      await defaultNamespaceReady(l, deps.readinessTimeoutMs, tenantAdmin, until);
      log(input.ref).info('clusterTree ready', { pid: status.pid, hostNamespace: hostNamespace(input.ref) });
      return { hostNamespace: hostNamespace(input.ref), pid: status.pid };
    },

    /**
     * Puts a tenant to sleep: stops clusterTree, its DNS and the control plane, newest first.
     * Nothing is deleted: data, certificates, allocation, host namespace, promoted nodes and host
     * pods stay, and the steps that started them start them again (wake).
     */
    async sleepTenant(input: { ref: VirtualClusterRef }): Promise<void> {
      const id = deps.tenantId(input.ref);
      const controlPlane = await deps.controlPlaneOwner(input.ref);
      // A process may take its whole grace period to stop: every heartbeat says so.
      reportProgress('stopping the tenant');
      // CoreDNS keeps its port (owned until teardown), as clusterTree keeps its own: waking
      // brings both back where they were.
      for (const c of ['clustertree', 'coredns'] as const) await deps.runtime.stop(id, c);
      for (const c of ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd'] as const)
        await deps.runtime.stop(controlPlane, c);
      log(input.ref).info('tenant asleep: its processes are stopped, its data kept');
    },

    /** Undo of deployClusterTree: the process, the host namespace (and all in it), the host RBAC. */
    async removeClusterTree(input: { ref: VirtualClusterRef }): Promise<void> {
      const { ref } = input;
      await deps.runtime.stop(deps.tenantId(ref), 'clustertree');
      await deps.network?.stopDns(deps.tenantId(ref));
      const ns = hostNamespace(ref);
      await hostCore.deleteNamespace({ name: ns }).catch(ignoreStatus(404));
      await hostRbacApi.deleteClusterRoleBinding({ name: `${NODE_READER}:${ns}` }).catch(ignoreStatus(404));
      await until(
        `host namespace ${ns} to be deleted`,
        120_000,
        async () => (await hostCore.readNamespace({ name: ns }).catch(ignoreStatus(404))) === undefined,
      );
      await deps.ports.release(portOwner(ref));
      // Its files are in the control plane's directory: a claimed warm-pool slot's, or the tenant's.
      const owner = await deps.controlPlaneOwner(ref);
      for (const dir of new Set([deps.tenantDir(ref), join(dirname(deps.tenantDir(ref)), owner)]))
        await rm(join(dir, 'clustertree'), { recursive: true, force: true });
      log(ref).info('clusterTree removed', { hostNamespace: ns });
    },
  };
}
