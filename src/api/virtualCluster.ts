/**
 * The VirtualCluster API (kosmos.io/v1alpha1) as zod schemas. The CRD in
 * config/crd/virtualclusters.kosmos.io.yaml declares the same shapes for the API server;
 * test/integration/api.test.ts checks that both agree on a table of examples.
 */
import { z } from 'zod';
import { DEFAULT_POD_SECURITY, DEFAULT_SERVICE_CIDR } from './defaults.js';
import { parseDuration } from './duration.js';

export { DEFAULT_POD_SECURITY, DEFAULT_SERVICE_CIDR, parseDuration };

export const GROUP = 'kosmos.io';
export const VERSION = 'v1alpha1';
export const PLURAL = 'virtualclusters';
export const KIND = 'VirtualCluster';
export const API_VERSION = `${GROUP}/${VERSION}`;
/** Held on every VirtualCluster until its workflow has torn the tenant down. */
export const FINALIZER = 'kosmos.io/teardown';

const dns1123Label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dns1123Subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const ipv4 = /^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$/;
const quantity = /^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[mkMGTPE])?$/;

function octets(ip: string): number[] | undefined {
  const m = ipv4.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1, 5).map(Number);
  return parts.every((p) => p <= 255) ? parts : undefined;
}

/** An IPv4 network in CIDR form whose host bits are zero, e.g. 10.96.0.0/12. */
export function parseIPv4Cidr(cidr: string): { base: number; prefix: number } | undefined {
  const [ip, bits, ...rest] = cidr.split('/');
  if (ip === undefined || bits === undefined || rest.length > 0 || !/^[0-9]{1,2}$/.test(bits))
    return undefined;
  const o = octets(ip);
  const prefix = Number(bits);
  if (!o || prefix > 32) return undefined;
  const base = ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((base & mask) >>> 0 !== base) return undefined;
  return { base, prefix };
}

/** True when `ip` (IPv4) lies in `cidr`. */
export function cidrContains(cidr: string, ip: string): boolean {
  const net = parseIPv4Cidr(cidr);
  const o = octets(ip);
  if (!net || !o) return false;
  const n = ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
  const mask = net.prefix === 0 ? 0 : (0xffffffff << (32 - net.prefix)) >>> 0;
  return (n & mask) >>> 0 === net.base;
}

/** True when the IPv4 network `outer` holds all of the network `inner`. */
export function cidrHolds(outer: string, inner: string): boolean {
  const o = parseIPv4Cidr(outer);
  const i = parseIPv4Cidr(inner);
  return !!o && !!i && o.prefix <= i.prefix && cidrContains(outer, formatIPv4(i.base));
}

export function formatIPv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 0xff).join('.');
}

export const Quantity = z.union([
  z.number().int().nonnegative(),
  z.string().regex(quantity, 'must be a Kubernetes quantity such as 500m, 4 or 8Gi'),
]);
export type Quantity = z.infer<typeof Quantity>;

const Duration = z
  .string()
  .max(32)
  .refine((d) => !Number.isNaN(parseDuration(d)), 'must be a duration such as 8760h, 90m or 1h30m');

/** The defaults of spec.certificates (also the CRD's). */
export const CERTIFICATE_DEFAULTS = { validity: '8760h', renewBefore: '720h', caOverlap: '24h' } as const;

export const Certificates = z
  .object({
    /** How long every leaf certificate lasts (default 8760h, a year; at least 1m). */
    validity: Duration.refine((d) => parseDuration(d) >= 60_000, 'must be at least 1m').optional(),
    /** How long before expiry the workflow renews them (default 720h; at least 1m, less than validity). */
    renewBefore: Duration.refine((d) => parseDuration(d) >= 60_000, 'must be at least 1m').optional(),
    /** Raising it by one rotates the cluster CA (`kosmos-vc rotate-ca`). */
    caRotation: z.number().int().nonnegative().optional(),
    /**
     * How long old and new CAs are both trusted after a CA rotation starts (default 24h; at least
     * 1m; under 5m, logs and exec may fail for a few minutes after the old CA is retired).
     */
    caOverlap: Duration.refine((d) => parseDuration(d) >= 60_000, 'must be at least 1m').optional(),
  })
  .refine(
    (c) =>
      parseDuration(c.renewBefore ?? CERTIFICATE_DEFAULTS.renewBefore) <
      parseDuration(c.validity ?? CERTIFICATE_DEFAULTS.validity),
    { message: 'renewBefore must be shorter than validity', path: ['renewBefore'] },
  );
export type Certificates = z.infer<typeof Certificates>;

/** A cron line (5 fields, or @hourly/@daily/@weekly/@monthly) or `@every <duration>`. */
const cronOrEvery = /^(@(hourly|daily|weekly|monthly)|@every ([0-9]+h)?([0-9]+m)?([0-9]+s)?|(\S+\s+){4}\S+)$/;

export const BackupSchedule = z.object({
  /** When backups are taken: a cron line in UTC (`0 3 * * *`) or `@every 6h` (at least 10s). */
  schedule: z
    .string()
    .max(100)
    .regex(
      cronOrEvery,
      'must be a cron line (5 fields), @hourly, @daily, @weekly, @monthly or @every <duration>',
    )
    .refine((s) => {
      const every = /^@every (.+)$/.exec(s)?.[1];
      return every === undefined || parseDuration(every) >= 10_000;
    }, '@every needs a duration of at least 10s, such as 6h or 30m'),
  /** How many scheduled backups are kept (default 7). */
  retention: z.number().int().min(1).max(1000).optional(),
});
export type BackupSchedule = z.infer<typeof BackupSchedule>;

export const PromoteResources = z.object({
  nodes: z
    .array(z.string().min(1).max(253).regex(dns1123Subdomain, 'must be a node name (DNS-1123 subdomain)'))
    // The list lives in the object three times (spec, managedFields, status) and in workflow
    // payloads: 10,000 long names pass etcd's 1.5 MiB and Temporal's 2 MiB (ADR 12).
    .max(5000)
    .refine((l) => new Set(l).size === l.length, 'node names must be unique')
    .optional(),
  resources: z
    .object({
      cpu: Quantity.optional(),
      memory: Quantity.optional(),
    })
    .optional(),
});
export type PromoteResources = z.infer<typeof PromoteResources>;

/** A DNS name or an IPv4 address, as a certificate's SAN and a kubeconfig's server name it. */
const HostName = z
  .string()
  .max(253)
  .refine(
    (s) => dns1123Subdomain.test(s) || octets(s) !== undefined,
    'must be a DNS name or an IPv4 address',
  );

/** An annotation key: an optional DNS prefix and a name (as the API server checks them). */
const annotationKey =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/**
 * How the tenant's API server is reached from outside the host cluster (its host Service
 * `kosmos-apiserver`); the published kubeconfig names the address, and the API server's
 * certificate carries it. Immutable.
 */
export const ApiServerExpose = z
  .object({
    /** ClusterIP (default): the Service's ClusterIP, in the host's network only. */
    type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer']),
    /**
     * What clients outside reach: a node's address for NodePort (default: the operator's node
     * address), the load balancer's IP or DNS name for LoadBalancer (required).
     */
    address: HostName.optional(),
    /** NodePort: the node port (default: one the host picks). */
    nodePort: z.number().int().min(30000).max(32767).optional(),
    /** Annotations of the Service (a load balancer's settings, such as the address it takes). */
    annotations: z
      .record(z.string().max(317).regex(annotationKey, 'must be an annotation key'), z.string().max(4096))
      .refine((a) => Object.keys(a).length <= 32, 'at most 32 annotations')
      .optional(),
  })
  .refine((e) => e.type !== 'LoadBalancer' || e.address !== undefined, {
    message:
      'a LoadBalancer needs address: the IP or DNS name clients reach it at (its certificate names it)',
    path: ['address'],
  })
  .refine((e) => e.type === 'NodePort' || e.nodePort === undefined, {
    message: 'nodePort is for type NodePort',
    path: ['nodePort'],
  })
  .refine((e) => e.type !== 'ClusterIP' || e.address === undefined, {
    message: 'address is for NodePort and LoadBalancer: a ClusterIP is reached at its own address',
    path: ['address'],
  });
export type ApiServerExpose = z.infer<typeof ApiServerExpose>;

export const VirtualClusterSpec = z.object({
  kubeconfig: z.string().max(65536).optional(),
  serviceCIDR: z
    .string()
    .max(18)
    .refine((c) => parseIPv4Cidr(c) !== undefined, 'must be an IPv4 network address in CIDR form')
    .default(DEFAULT_SERVICE_CIDR),
  certSANs: z
    .array(HostName)
    .max(32)
    .refine((l) => new Set(l).size === l.length, 'names must be unique')
    .optional(),
  promoteResources: PromoteResources.optional(),
  /** The tenant API server's exposure outside the host cluster. Immutable. */
  apiServer: z.object({ expose: ApiServerExpose.optional() }).optional(),
  /**
   * What tenant pods on promoted nodes may ask of their host node. `baseline` (default) refuses
   * host namespaces, host ports, host paths, privileged containers and unsafe capabilities or
   * sysctls. `privileged` allows them on the tenant's promoted nodes, making the tenant root there
   * (an operator accepts it only with KOSMOS_VC_ALLOW_PRIVILEGED_TENANTS=true); a virtual-node
   * pod that asks for them is pinned to those nodes. Immutable; the CRD defaults it to
   * baseline, and so does everything that reads it when it is absent.
   */
  podSecurity: z.enum(['baseline', 'privileged']).optional(),
  /**
   * true: the tenant sleeps (phase Sleeping): its control plane, clusterTree and DNS stop, its
   * data, certificates, promoted nodes and host pods stay; false (or absent) wakes it.
   */
  sleep: z.boolean().optional(),
  /**
   * Sleep when idle: no request of a user or workload for `idleAfter` puts the tenant to sleep
   * (phase Sleeping, reason Idle); the first request then wakes it (`wakeOnRequest`, default
   * true), as does any spec change.
   */
  autoSleep: z
    .object({
      idleAfter: Duration.refine((d) => parseDuration(d) >= 10_000, 'must be at least 10s'),
      wakeOnRequest: z.boolean().optional(),
    })
    .optional(),
  /** Certificate lifetimes, renewal and CA rotation (docs/adr/0010). */
  certificates: Certificates.optional(),
  /** Scheduled backups (docs/adr/0011). */
  backup: BackupSchedule.optional(),
  /** Create this tenant from a backup: `<name>/<file>` in the operator's backups of this namespace. Immutable. */
  restore: z
    .object({
      backup: z
        .string()
        .max(300)
        .regex(
          /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[A-Za-z0-9][A-Za-z0-9._-]*$/,
          'must be <name>/<file> of a backup',
        ),
    })
    .optional(),
});
export type VirtualClusterSpec = z.infer<typeof VirtualClusterSpec>;

export const Phase = z.enum([
  'Pending',
  'Preparing',
  'Initialized',
  'Ready',
  'Sleeping',
  'Failed',
  'Deleting',
]);
export type Phase = z.infer<typeof Phase>;

export const Condition = z.object({
  type: z.string(),
  status: z.enum(['True', 'False', 'Unknown']),
  observedGeneration: z.number().int().optional(),
  lastTransitionTime: z.string(),
  reason: z.string(),
  message: z.string(),
});
export type Condition = z.infer<typeof Condition>;

export const VirtualClusterStatus = z.object({
  phase: Phase.optional(),
  reason: z.string().optional(),
  message: z.string().optional(),
  observedGeneration: z.number().int().optional(),
  apiServerEndpoint: z.string().optional(),
  kubeconfigSecretRef: z.object({ name: z.string(), key: z.string() }).optional(),
  workflowId: z.string().optional(),
  promoted: z
    .object({
      nodes: z.array(z.string()),
      nodeCount: z.number().int(),
      cpu: z.string(),
      memory: z.string(),
      pending: z.array(z.object({ node: z.string(), reason: z.string(), message: z.string() })),
    })
    .partial()
    .optional(),
  certificates: z
    .object({
      notAfter: z.string(),
      renewAt: z.string(),
      caNotAfter: z.string(),
      caFingerprint: z.string(),
      caRotation: z.number().int(),
      previousCAFingerprint: z.string(),
      previousCARetiresAt: z.string(),
    })
    .partial()
    .optional(),
  conditions: z.array(Condition).optional(),
});
export type VirtualClusterStatus = z.infer<typeof VirtualClusterStatus>;

export const ObjectMeta = z.object({
  name: z
    .string()
    .max(63)
    .regex(
      dns1123Label,
      'metadata.name must be a DNS-1123 label (at most 63 lowercase letters, digits and -)',
    ),
  namespace: z.string(),
  uid: z.string(),
  generation: z.number().int().optional(),
  resourceVersion: z.string().optional(),
  deletionTimestamp: z.string().optional(),
  finalizers: z.array(z.string()).optional(),
});

/** A VirtualCluster as the API server returns it. */
export const VirtualCluster = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(KIND),
  metadata: ObjectMeta,
  spec: VirtualClusterSpec.default({ serviceCIDR: DEFAULT_SERVICE_CIDR }),
  status: VirtualClusterStatus.optional(),
});
export type VirtualCluster = z.infer<typeof VirtualCluster>;

/** What identifies one VirtualCluster for its whole life; a re-created object has a new uid. */
export const VirtualClusterRef = z.object({ namespace: z.string(), name: z.string(), uid: z.string() });
export type VirtualClusterRef = z.infer<typeof VirtualClusterRef>;

const SUFFIX: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** The value of a Kubernetes quantity (`500m` is 0.5, `8Gi` is 8589934592); NaN if it is not one. */
export function parseQuantity(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE])?$/.exec(q.trim());
  return m ? Number(m[1]) * SUFFIX[m[2] ?? '']! : NaN;
}
