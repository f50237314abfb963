/**
 * Operator configuration from the environment, parsed once at the edge.
 *
 *   KUBECONFIG                 host cluster to serve (unset: `kosmos-vc up` runs an embedded one)
 *   TEMPORAL_ADDRESS           Temporal frontend host:port (unset: `up` runs a dev server)
 *   TEMPORAL_NAMESPACE         Temporal namespace (default "default")
 *   KOSMOS_VC_STATE_DIR        where tenants' data, certificates and logs live
 *   KOSMOS_VC_TASK_QUEUE       Temporal task queue (default "kosmos-vc")
 *   KOSMOS_VC_WATCH_NAMESPACE  serve VirtualClusters of this namespace only (default: all)
 *   KOSMOS_VC_READINESS_TIMEOUT_SECONDS  how long a component may take to become ready (60)
 *   KOSMOS_VC_WORKFLOW_CACHE     workflows a worker keeps in memory between their tasks: 0 (none)
 *                              or at least 2 (the Temporal SDK's default, from the heap size);
 *                              one evicted replays its history at its next task
 *   KOSMOS_VC_CLUSTERTREE      "shared" (default): one clusterTree process of this worker serves
 *                              its tenants, each with its own ports and credentials; "per-tenant":
 *                              a process each (ADR 12, decision 13). Tenants in pods: always their own
 *   KOSMOS_VC_WARM_POOL        control planes this worker keeps started for new tenants of the
 *                              default service range (0, the default: none; ADR 12, decision 15).
 *                              Each costs what an idle tenant does
 *   KOSMOS_VC_ONE_PROCESS      "true" (the default where control planes are processes): a tenant's
 *                              API server, controller-manager and scheduler, when this worker
 *                              starts or wakes them, run as one process, kube-control-plane (ADR
 *                              12, decisions 16 and 21; ~120 MiB less RSS each). "false": a
 *                              process each, as control planes in pods always run them
 *   KOSMOS_VC_REAL_NODE        the embedded host also runs a real node where it can (true)
 *   KOSMOS_VC_NODE_ADDRESS     an address of this machine host pods reach (tenant API and DNS for
 *                              pods); the embedded host's real node sets it itself
 *   KOSMOS_VC_POD_CIDR         the host's pod range (mirrored EndpointSlices may name it)
 *   KOSMOS_VC_ALLOW_PRIVILEGED_TENANTS  tenants may set spec.podSecurity: privileged (false)
 *   KOSMOS_VC_HOSTS_IMAGE      an image with sh and sed on the host nodes: the tenant FQDN of a pod
 *                              with a subdomain goes in its /etc/hosts; the embedded real node's
 *                              busybox by default, elsewhere unset (the host kubelet's file stays)
 *   KOSMOS_VC_BACKUP_DIR       where tenant backups are written and restored from (default
 *                              <state dir>/backups); `kosmos-vc backup` and `restore` read it too
 *   KOSMOS_VC_METRICS_ADDRESS  where the operator serves Prometheus `/metrics`, host:port (":port"
 *                              every interface; port 0 picks one; "off" none). Set, it must be
 *                              free; unset, 127.0.0.1:9464 is tried and, when another operator on
 *                              the machine has it, this one runs without (one address per process)
 *   KOSMOS_VC_RUNTIME          where new tenants' control planes run: "process" (default), on this
 *                              machine, or "kubernetes", as pods of their host namespaces with
 *                              clusterTree and CoreDNS (ADR 14; no backups or sleep yet)
 *   KOSMOS_VC_IMAGES           with "kubernetes": component=image[,component=image], the images of
 *                              etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
 *                              clustertree, coredns (default: those setup built on this machine)
 *   KOSMOS_VC_ETCD_STORAGE_CLASS  with "kubernetes": the StorageClass of etcd's claims (default:
 *                              the cluster's default class)
 *   KOSMOS_VC_POD_NODE_SELECTOR  with "kubernetes": key=value[,key=value], the nodes control-plane
 *                              pods run on; KOSMOS_VC_POD_TOLERATE_ALL=true: they tolerate every
 *                              taint. `up` on the embedded host: its real node, and true. Every
 *                              worker of a task queue must have the same (or they roll the pods)
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { POD_COMPONENTS } from '../runtime/podWorkload.js';
import { TASK_QUEUE } from '../workflows/definitions.js';

export const OperatorEnv = z.object({
  KUBECONFIG: z.string().min(1).optional(),
  TEMPORAL_ADDRESS: z
    .string()
    .regex(/^[^:\s]+:[0-9]{1,5}$/, 'TEMPORAL_ADDRESS must be host:port')
    .optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  KOSMOS_VC_STATE_DIR: z.string().min(1).optional(),
  KOSMOS_VC_BACKUP_DIR: z.string().min(1).optional(),
  KOSMOS_VC_TASK_QUEUE: z.string().min(1).default(TASK_QUEUE),
  KOSMOS_VC_WATCH_NAMESPACE: z.string().min(1).optional(),
  KOSMOS_VC_READINESS_TIMEOUT_SECONDS: z.coerce.number().int().positive().default(60),
  KOSMOS_VC_WORKFLOW_CACHE: z
    .string()
    .regex(/^[0-9]+$/, 'must be a whole number')
    .transform(Number)
    .refine((n) => n === 0 || n >= 2, 'must be 0 (no cache: every task replays) or at least 2')
    .optional(),
  KOSMOS_VC_CLUSTERTREE: z.enum(['shared', 'per-tenant']).default('shared'),
  KOSMOS_VC_WARM_POOL: z.coerce.number().int().min(0).max(100).default(0),
  /** Absent: the operator's default (one process, where control planes are processes). */
  KOSMOS_VC_ONE_PROCESS: z
    .enum(['true', 'false'])
    .optional()
    .transform((v) => (v === undefined ? undefined : v === 'true')),
  /** `kosmos-vc worker` also runs a watcher. */
  KOSMOS_VC_WATCHER: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  /** `kosmos-vc worker` leaves tenant processes running when it stops. */
  KOSMOS_VC_KEEP_TENANTS: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  KOSMOS_VC_NODE_ADDRESS: z.ipv4().optional(),
  KOSMOS_VC_POD_CIDR: z.cidrv4().optional(),
  /** The embedded host runs a real node (containerd, kubelet, kube-proxy) where the machine allows. */
  KOSMOS_VC_REAL_NODE: z
    .enum(['true', 'false'])
    .default('true')
    .transform((v) => v === 'true'),
  /** spec.podSecurity: privileged makes a tenant root on its promoted nodes: off unless asked. */
  KOSMOS_VC_ALLOW_PRIVILEGED_TENANTS: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  KOSMOS_VC_HOSTS_IMAGE: z.string().min(1).optional(),
  /** The namespace the operator's pods run in (the chart sets it): tenants in pods admit it. */
  KOSMOS_VC_OPERATOR_NAMESPACE: z.string().min(1).optional(),
  KOSMOS_VC_METRICS_ADDRESS: z
    .string()
    .regex(/^(off|[^\s]*:[0-9]{1,5})$/, 'KOSMOS_VC_METRICS_ADDRESS must be host:port, :port or "off"')
    .optional(),
  KOSMOS_VC_RUNTIME: z.enum(['process', 'kubernetes']).default('process'),
  KOSMOS_VC_ETCD_STORAGE_CLASS: z.string().min(1).optional(),
  KOSMOS_VC_POD_NODE_SELECTOR: z
    .string()
    .regex(
      /^[^=,\s]+=[^=,\s]*(,[^=,\s]+=[^=,\s]*)*$/,
      'KOSMOS_VC_POD_NODE_SELECTOR must be key=value[,key=value]',
    )
    .optional(),
  KOSMOS_VC_POD_TOLERATE_ALL: z.enum(['true', 'false']).optional(),
  KOSMOS_VC_IMAGES: z
    .string()
    .regex(
      /^[a-z-]+=[^=,\s]+(,[a-z-]+=[^=,\s]+)*$/,
      'KOSMOS_VC_IMAGES must be component=image[,component=image]',
    )
    .transform((v) => Object.fromEntries(v.split(',').map((kv) => kv.split('=') as [string, string])))
    .refine(
      (m) => Object.keys(m).every((c) => (POD_COMPONENTS as readonly string[]).includes(c)),
      `KOSMOS_VC_IMAGES names components of ${POD_COMPONENTS.join(', ')}`,
    )
    .optional(),
  KOSMOS_VC_EXPOSE_TYPES: z
    .string()
    .regex(
      /^((NodePort|LoadBalancer)(,(NodePort|LoadBalancer))*)?$/,
      'KOSMOS_VC_EXPOSE_TYPES lists NodePort, LoadBalancer (comma-separated; empty: neither)',
    )
    .transform((v) => (v ? (v.split(',') as ('NodePort' | 'LoadBalancer')[]) : []))
    .optional(),
  KOSMOS_VC_ETCD_UNSAFE_NO_FSYNC: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
});
export type OperatorEnv = z.infer<typeof OperatorEnv>;

export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9464';

export interface MetricsEndpoint {
  host: string;
  port: number;
  /** Set explicitly: the operator does not start without it. */
  required: boolean;
}

/** KOSMOS_VC_METRICS_ADDRESS as the operator's metrics endpoint; undefined for "off". */
export function metricsEndpoint(address: string | undefined): MetricsEndpoint | undefined {
  if (address === 'off') return undefined;
  const a = address ?? DEFAULT_METRICS_ADDRESS;
  const at = a.lastIndexOf(':');
  return {
    host: a.slice(0, at).replace(/^\[|\]$/g, ''),
    port: Number(a.slice(at + 1)),
    required: address !== undefined,
  };
}

export function defaultStateDir(): string {
  return join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'kosmos-vc');
}

export function readOperatorEnv(env: NodeJS.ProcessEnv = process.env): OperatorEnv {
  const parsed = OperatorEnv.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid environment: ${problems}`);
  }
  return parsed.data;
}
