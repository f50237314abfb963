/**
 * What clusterTree may do, on both sides (docs/adr/0006-clustertree.md, least privilege): in the
 * tenant, a ClusterRole for the user `kosmos-vc:clustertree` with what a kubelet-like agent needs;
 * on the host, a service account in the tenant's host namespace with a Role there and read-only
 * access to nodes.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import { OriginLabel, tenantHash } from '../clustertree/naming.js';
import { hostNamespaceObject, type PodSecurity } from './tenantNetwork.js';

import { CLUSTERTREE_USER } from '../pki/controlPlanePki.js';

export { CLUSTERTREE_USER };
export const HOST_SA = 'clustertree';
const HOST_ROLE = 'kosmos-vc-clustertree';
export const NODE_READER = 'kosmos-vc:clustertree-node-reader';

export function tenantRbac(): KubernetesObject[] {
  const rules = [
    {
      apiGroups: [''],
      resources: ['nodes'],
      verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
    },
    { apiGroups: [''], resources: ['nodes/status'], verbs: ['get', 'update', 'patch'] },
    { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'delete'] },
    { apiGroups: [''], resources: ['pods/status'], verbs: ['get', 'update', 'patch'] },
    { apiGroups: [''], resources: ['configmaps', 'secrets'], verbs: ['get', 'list', 'watch'] },
    // Hand-made EndpointSlices (selector-less Services) are mirrored to the host.
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
    // Services are re-created with their host ClusterIP (see the controller's readdress).
    { apiGroups: [''], resources: ['services'], verbs: ['get', 'list', 'watch', 'create', 'delete'] },
    { apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] },
    // Pod certificate projections: requested for the pod as its kubelet would (podCertificates.ts).
    { apiGroups: [''], resources: ['serviceaccounts'], verbs: ['get'] },
    {
      apiGroups: ['certificates.k8s.io'],
      resources: ['podcertificaterequests'],
      verbs: ['get', 'list', 'watch', 'create'],
    },
    // ClusterTrustBundle projections of pods are written to the host from the tenant's bundles.
    {
      apiGroups: ['certificates.k8s.io'],
      resources: ['clustertrustbundles'],
      verbs: ['get', 'list', 'watch'],
    },
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
    {
      apiGroups: ['coordination.k8s.io'],
      resources: ['leases'],
      verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
    },
  ];
  return [
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: CLUSTERTREE_USER },
      rules,
    } as KubernetesObject,
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: CLUSTERTREE_USER },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: CLUSTERTREE_USER },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: CLUSTERTREE_USER }],
    } as KubernetesObject,
  ];
}

/**
 * clusterTree's identity and rights in the host. `tokenSecret`: a token Secret of its service
 * account, for a clusterTree process (its host kubeconfig); a pod uses its own projected token.
 */
export function hostRbac(
  ref: VirtualClusterRef,
  ns: string,
  podSecurity: PodSecurity,
  tokenSecret = true,
): KubernetesObject[] {
  const labels = { [OriginLabel.managedBy]: 'kosmos-vc', [OriginLabel.tenant]: tenantHash(ref) };
  const all = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];
  const sa = { kind: 'ServiceAccount', name: HOST_SA, namespace: ns };
  return [
    hostNamespaceObject(ref, podSecurity),
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: HOST_SA, namespace: ns, labels } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: HOST_ROLE, namespace: ns, labels },
      rules: [
        { apiGroups: [''], resources: ['pods', 'configmaps', 'secrets', 'services'], verbs: all },
        { apiGroups: [''], resources: ['resourcequotas'], verbs: ['get', 'list', 'watch'] },
        // The host kubelet's events about the host pods, shown to the tenant (events.ts).
        { apiGroups: [''], resources: ['events'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: all },
        // The tenant nodes' kubelet API: logs, exec, attach and port-forward of the host pods.
        { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
        {
          apiGroups: [''],
          resources: ['pods/exec', 'pods/attach', 'pods/portforward'],
          verbs: ['get', 'create'],
        },
        // Ephemeral containers (kubectl debug) a tenant adds to a running pod.
        { apiGroups: [''], resources: ['pods/ephemeralcontainers'], verbs: ['get', 'patch'] },
        // In-place resizes a tenant asks of a running pod.
        { apiGroups: [''], resources: ['pods/resize'], verbs: ['get', 'patch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: HOST_ROLE, namespace: ns, labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: HOST_ROLE },
      subjects: [sa],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: NODE_READER, labels: { [OriginLabel.managedBy]: 'kosmos-vc' } },
      rules: [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] }],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: `${NODE_READER}:${ns}`, labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: NODE_READER },
      subjects: [sa],
    },
    ...(tokenSecret
      ? [
          {
            apiVersion: 'v1',
            kind: 'Secret',
            type: 'kubernetes.io/service-account-token',
            metadata: {
              name: `${HOST_SA}-token`,
              namespace: ns,
              labels,
              annotations: { 'kubernetes.io/service-account.name': HOST_SA },
            },
          },
        ]
      : []),
  ] as KubernetesObject[];
}
