/**
 * VirtualClusters the API must accept or reject. The unit test checks the zod schemas against
 * this table, the integration test the real API server with the CRD: both must agree.
 */
export interface SpecExample {
  title: string;
  name?: string;
  spec: Record<string, unknown>;
  valid: boolean;
}

export const specExamples: SpecExample[] = [
  { title: 'empty spec', spec: {}, valid: true },
  {
    title: 'promoted nodes',
    spec: { promoteResources: { nodes: ['node-a', 'node-b.example'] } },
    valid: true,
  },
  {
    title: 'cpu and memory as strings',
    spec: { promoteResources: { resources: { cpu: '10', memory: '100Gi' } } },
    valid: true,
  },
  {
    title: 'cpu as an integer, memory in M',
    spec: { promoteResources: { resources: { cpu: 4, memory: '512M' } } },
    valid: true,
  },
  { title: 'millicores', spec: { promoteResources: { resources: { cpu: '500m' } } }, valid: true },
  {
    title: 'service CIDR and SANs',
    spec: { serviceCIDR: '10.100.0.0/16', certSANs: ['vc.example.com', '192.0.2.1'] },
    valid: true,
  },
  { title: 'a wide but well-formed service CIDR', spec: { serviceCIDR: '10.0.0.0/8' }, valid: true },
  { title: 'a privileged tenant', spec: { podSecurity: 'privileged' }, valid: true },
  {
    title: 'the API server on a node port',
    spec: { apiServer: { expose: { type: 'NodePort' } } },
    valid: true,
  },
  {
    title: 'the API server on a chosen node port and address',
    spec: { apiServer: { expose: { type: 'NodePort', nodePort: 30443, address: 'vc.example.com' } } },
    valid: true,
  },
  {
    title: 'the API server behind a load balancer, with its settings',
    spec: {
      apiServer: {
        expose: {
          type: 'LoadBalancer',
          address: '192.0.2.10',
          annotations: { 'metallb.universe.tf/loadBalancerIPs': '192.0.2.10', team: 'a' },
        },
      },
    },
    valid: true,
  },
  {
    title: 'kubeconfig as written by the operator',
    spec: { kubeconfig: 'YXBpVmVyc2lvbjogdjE=' },
    valid: true,
  },
  {
    title: 'short-lived certificates and a CA rotation',
    spec: { certificates: { validity: '3m', renewBefore: '150s', caRotation: 1, caOverlap: '1m' } },
    valid: true,
  },
  {
    title: 'a year of certificates, renewed 30 days before',
    spec: { certificates: { validity: '8760h' } },
    valid: true,
  },
  { title: 'nightly backups', spec: { backup: { schedule: '0 3 * * *', retention: 14 } }, valid: true },
  { title: 'backups every 15 seconds', spec: { backup: { schedule: '@every 15s' } }, valid: true },
  {
    title: 'a restore',
    spec: { restore: { backup: 'tenant1/manual-2026-12-03T06-00-00-000Z.tar.gz' } },
    valid: true,
  },
  { title: 'sleep after 30 idle minutes', spec: { autoSleep: { idleAfter: '30m' } }, valid: true },
  {
    title: 'sleep when idle, woken only by a spec change',
    spec: { autoSleep: { idleAfter: '1h', wakeOnRequest: false } },
    valid: true,
  },
  { title: 'name with uppercase', name: 'Tenant', spec: {}, valid: false },
  { title: 'name longer than 63 characters', name: 'a'.repeat(64), spec: {}, valid: false },
  { title: 'node name with uppercase', spec: { promoteResources: { nodes: ['Node-A'] } }, valid: false },
  { title: 'empty node name', spec: { promoteResources: { nodes: [''] } }, valid: false },
  { title: 'duplicate node names', spec: { promoteResources: { nodes: ['a', 'a'] } }, valid: false },
  { title: 'nodes not a list', spec: { promoteResources: { nodes: 'node-a' } }, valid: false },
  { title: 'negative cpu', spec: { promoteResources: { resources: { cpu: '-1' } } }, valid: false },
  {
    title: 'cpu with a unit typo',
    spec: { promoteResources: { resources: { cpu: '10 cores' } } },
    valid: false,
  },
  { title: 'memory in GB', spec: { promoteResources: { resources: { memory: '100GB' } } }, valid: false },
  { title: 'service CIDR with host bits', spec: { serviceCIDR: '10.96.0.1/12' }, valid: false },
  { title: 'a pod security level that does not exist', spec: { podSecurity: 'root' }, valid: false },
  { title: 'service CIDR that is not an address', spec: { serviceCIDR: '300.1.1.0/24' }, valid: false },
  { title: 'service CIDR without a prefix', spec: { serviceCIDR: '10.96.0.0' }, valid: false },
  {
    title: 'renewBefore as long as validity',
    spec: { certificates: { validity: '2h', renewBefore: '120m' } },
    valid: false,
  },
  {
    title: 'renewBefore longer than the default validity',
    spec: { certificates: { renewBefore: '9000h' } },
    valid: false,
  },
  {
    title: 'certificates valid for seconds',
    spec: { certificates: { validity: '30s', renewBefore: '10s' } },
    valid: false,
  },
  { title: 'a validity in days', spec: { certificates: { validity: '365d' } }, valid: false },
  { title: 'an empty overlap', spec: { certificates: { caOverlap: '' } }, valid: false },
  { title: 'an overlap of seconds', spec: { certificates: { caOverlap: '30s' } }, valid: false },
  { title: 'renewal at the moment of expiry', spec: { certificates: { renewBefore: '0s' } }, valid: false },
  { title: 'a negative CA rotation', spec: { certificates: { caRotation: -1 } }, valid: false },
  { title: 'backups every second', spec: { backup: { schedule: '@every 1s' } }, valid: false },
  { title: 'a schedule that is not cron', spec: { backup: { schedule: 'nightly' } }, valid: false },
  {
    title: 'an interval with its units out of order',
    spec: { backup: { schedule: '@every 30m1h' } },
    valid: false,
  },
  { title: 'a backup without a schedule', spec: { backup: { retention: 3 } }, valid: false },
  { title: 'retention 0', spec: { backup: { schedule: '@daily', retention: 0 } }, valid: false },
  {
    title: 'a restore outside the namespace',
    spec: { restore: { backup: '../other/x.tar.gz' } },
    valid: false,
  },
  { title: 'a restore of a bare file', spec: { restore: { backup: 'x.tar.gz' } }, valid: false },
  { title: 'idle after a second', spec: { autoSleep: { idleAfter: '1s' } }, valid: false },
  { title: 'auto sleep without a duration', spec: { autoSleep: { wakeOnRequest: true } }, valid: false },
  { title: 'SAN with a space', spec: { certSANs: ['bad name'] }, valid: false },
  {
    title: 'a load balancer without the address clients reach',
    spec: { apiServer: { expose: { type: 'LoadBalancer' } } },
    valid: false,
  },
  {
    title: 'a node port for a ClusterIP',
    spec: { apiServer: { expose: { type: 'ClusterIP', nodePort: 30443 } } },
    valid: false,
  },
  {
    title: 'an address for a ClusterIP',
    spec: { apiServer: { expose: { type: 'ClusterIP', address: 'vc.example.com' } } },
    valid: false,
  },
  {
    title: 'a node port outside the range',
    spec: { apiServer: { expose: { type: 'NodePort', nodePort: 8443 } } },
    valid: false,
  },
  {
    title: 'an exposure of no known type',
    spec: { apiServer: { expose: { type: 'Ingress' } } },
    valid: false,
  },
  {
    title: 'an exposure without a type',
    spec: { apiServer: { expose: { address: 'vc.example.com' } } },
    valid: false,
  },
  {
    title: 'an annotation key with a space',
    spec: { apiServer: { expose: { type: 'NodePort', annotations: { 'bad key': 'x' } } } },
    valid: false,
  },
];
