/**
 * What one clusterTree process is told: whose it is, where both API servers are, and its timings.
 * The operator writes this file (deployClusterTree); the process parses it at start.
 */
import { z } from 'zod';
import { VirtualClusterRef } from '../api/virtualCluster.js';

/** How often a tenant node's status is written again unchanged (a kubelet's nodeStatusReportFrequency). */
const NODE_STATUS_INTERVAL_MS = 300_000;

export const ClusterTreeConfig = z.object({
  tenant: VirtualClusterRef,
  hostNamespace: z.string().min(1),
  /** The tenant API server, as the least-privileged clusterTree identity. */
  tenantKubeconfig: z.string().min(1),
  /**
   * The host API server, as the tenant namespace's clusterTree service account. Absent in a pod:
   * the pod runs as that service account, and its own token and the cluster's address serve.
   */
  hostKubeconfig: z.string().min(1).optional(),
  listen: z.object({ address: z.string(), port: z.number().int().positive() }),
  /**
   * The kubelet endpoint of the tenant's nodes (logs, exec, attach, port-forward), advertised in
   * their status; TLS with a serving certificate of the tenant CA, clients from the tenant CA.
   */
  kubelet: z
    .object({
      /** The address published in the tenant nodes' status (where the tenant API server calls). */
      address: z.string(),
      /** Where it listens, when not at `address` (a pod: every address, published by its Service's name). */
      bind: z.string().optional(),
      port: z.number().int().positive(),
      certFile: z.string(),
      keyFile: z.string(),
      clientCAFile: z.string(),
      /**
       * The node address type the endpoint is published as. InternalDNS (what tenant apiservers
       * started since ADR 8 prefer) leaves InternalIP to the host node; InternalIP is for tenants
       * whose apiserver was started before, with InternalIP first.
       */
      addressType: z.enum(['InternalIP', 'InternalDNS']).default('InternalIP'),
    })
    .optional(),
  /** Where pods reach the tenant API server (host ClusterIP and port of its Service). */
  tenantApi: z.object({ clusterIP: z.string(), port: z.number().int().positive() }).optional(),
  /**
   * Addresses a mirrored EndpointSlice (of a selector-less tenant Service) may name: this host's
   * pods and node. Anything else a tenant writes there is left out. Empty: nothing is mirrored.
   */
  endpointRanges: z.array(z.string()).default([]),
  /** The tenant's Service range: a tenant Service takes its host ClusterIP only from inside it. */
  serviceCIDR: z.string().optional(),
  /** The tenant's DNS Service address: host pods of ClusterFirst pods resolve through it. */
  clusterDNS: z.string().optional(),
  /** An image with `sh` and `sed` on the host nodes: puts a pod's tenant FQDN in /etc/hosts. */
  hostsImage: z.string().min(1).optional(),
  /** spec.podSecurity: what pods on promoted nodes may ask of their host node. */
  podSecurity: z.enum(['baseline', 'privileged']).default('baseline'),
  /**
   * A host node address where the host's node ports answer (the operator's node address): the
   * virtual node's InternalIP. Unset: the virtual node shows clusterTree's endpoint there.
   */
  virtualNodeAddress: z.string().optional(),
  /** The tenant node standing for spec.promoteResources.resources. */
  virtualNodeName: z.string().min(1),
  /** The ResourceQuota in the host namespace that caps the promoted resources. */
  quotaName: z.string().min(1),
  /**
   * The tenant's controller-manager runs no node-lifecycle controller: a promoted node's health
   * taints (node.kubernetes.io/...) are its host node's, which clusterTree writes. Off, as in a
   * configuration made before ADR 12 decision 19 (its tenant's controller-manager may still judge
   * nodes, and writes those taints itself): clusterTree leaves them alone. The operator writes it
   * with the Lease timings below (TENANT_NODE_HEALTH).
   */
  nodeHealthFromHost: z.boolean().default(false),
  /**
   * The Lease of each tenant node: its stated duration and how often it is renewed. The defaults
   * are a kubelet's, which a controller-manager that judges nodes by their Leases needs; the
   * operator writes longer ones for tenants whose controller-manager does not.
   */
  leaseDurationSeconds: z.number().int().positive().default(40),
  heartbeatIntervalMs: z.number().int().positive().default(10_000),
  /**
   * Node status written again unchanged, as a kubelet's nodeStatusReportFrequency (5 min): the
   * Lease is the heartbeat; a change on the host node is written when it happens. Not with
   * `nodeHealthFromHost`, where nothing reads a status's heartbeat times (ADR 12, decision 20).
   */
  nodeStatusIntervalMs: z.number().int().positive().default(NODE_STATUS_INTERVAL_MS),
  /** A full comparison of both sides, for drift nobody was told about. */
  resyncIntervalMs: z.number().int().positive().default(60_000),
  tokenExpirationSeconds: z.number().int().min(600).default(3600),
  concurrency: z.number().int().positive().default(48),
});
export type ClusterTreeConfig = z.infer<typeof ClusterTreeConfig>;
export type ClusterTreeConfigInput = z.input<typeof ClusterTreeConfig>;

export interface PeriodicPass {
  name: 'leases' | 'node status' | 'resync';
  ms: number;
  /** A pass still running after this long may hang on a request: the next one starts anyway. */
  hungAfterMs: number;
}

/**
 * The periodic work of a tree once its first pass is done: Lease renewals, the resync, and, where
 * the tenant's node-lifecycle controller may still judge nodes (a configuration without
 * `nodeHealthFromHost`), every node's status written again unchanged, as a kubelet's. With it,
 * nothing reads a status's heartbeat times (ADR 12, decision 20).
 */
export function periodicPasses(
  cfg: Pick<
    ClusterTreeConfig,
    'heartbeatIntervalMs' | 'nodeStatusIntervalMs' | 'resyncIntervalMs' | 'nodeHealthFromHost'
  >,
): PeriodicPass[] {
  const beat = cfg.heartbeatIntervalMs;
  const status = cfg.nodeStatusIntervalMs;
  const resync = cfg.resyncIntervalMs;
  return [
    { name: 'leases', ms: beat, hungAfterMs: 1.5 * beat },
    ...(cfg.nodeHealthFromHost
      ? []
      : [{ name: 'node status' as const, ms: status, hungAfterMs: 3 * status }]),
    { name: 'resync', ms: resync, hungAfterMs: Math.max(3 * resync, 60_000) },
  ];
}
