/**
 * A pod's own name in its /etc/hosts. For a pod with a subdomain the kubelet writes the line
 * `<ip> <hostname>.<subdomain>.<namespace>.svc.<domain> <hostname>`, and on the host that
 * namespace is the tenant's host namespace. As vcluster does, an init container copies the
 * kubelet's file with that name in tenant terms into an emptyDir, and every container mounts the
 * copy at /etc/hosts (the kubelet leaves a container that mounts /etc/hosts itself alone).
 *
 * It needs an image with `sh` and `sed` on the host nodes (`hostsImage`, an operator setting):
 * without one, pods keep the kubelet's file. Pods without a subdomain need nothing: their line
 * names only the hostname.
 */
import type { V1Container, V1PodSpec } from '@kubernetes/client-node';
import { parseQuantity } from '../api/virtualCluster.js';

/** The init container and the volume of the rewrite: names a tenant pod is not expected to use. */
export const HOSTS_CONTAINER = 'kosmos-vc-hosts';
const HOSTS_VOLUME = 'kosmos-vc-hosts';
const NOBODY = 65534;

const TINY = { cpu: '10m', memory: '16Mi' };

const escape = (s: string): string => s.replace(/\./g, '\\.');

/** Whether containers make a Guaranteed pod: CPU and memory limits, requests equal or unset. */
function guaranteed(containers: V1Container[]): boolean {
  return containers.every((c) =>
    ['cpu', 'memory'].every((r) => {
      const limit = c.resources?.limits?.[r];
      const request = c.resources?.requests?.[r];
      return (
        limit !== undefined &&
        (request === undefined || request === limit || parseQuantity(request) === parseQuantity(limit))
      );
    }),
  );
}

/**
 * The host pod spec with the tenant's FQDN in /etc/hosts, or unchanged when it needs none (no
 * subdomain or hostname, no image) or the tenant took the names the rewrite uses; `rewritten`
 * says which (the host pod records it: only then is its init container hidden from the tenant).
 */
export function withTenantHosts(
  spec: V1PodSpec,
  opts: { image?: string; hostNamespace: string; namespace: string; clusterDomain: string },
): { spec: V1PodSpec; rewritten: boolean } {
  const unchanged = { spec, rewritten: false };
  const { hostname, subdomain } = spec;
  if (!opts.image || !hostname || !subdomain || spec.hostNetwork) return unchanged;
  const all = [...(spec.initContainers ?? []), ...spec.containers];
  if (all.some((c) => c.name === HOSTS_CONTAINER) || spec.volumes?.some((v) => v.name === HOSTS_VOLUME))
    return unchanged;
  // Names are DNS labels ([a-z0-9-]): nothing in them but '.' means anything to sed.
  const hostFQDN = escape(`${hostname}.${subdomain}.${opts.hostNamespace}.svc.`);
  const tenantFQDN = `${hostname}.${subdomain}.${opts.namespace}.svc.${opts.clusterDomain}`;
  const rewrite: V1Container = {
    name: HOSTS_CONTAINER,
    image: opts.image,
    command: [
      'sh',
      '-c',
      `sed -e 's/[[:space:]]${hostFQDN}[^[:space:]]*/ ${tenantFQDN}/' /etc/hosts > /kosmos-vc-hosts/hosts`,
    ],
    volumeMounts: [{ name: HOSTS_VOLUME, mountPath: '/kosmos-vc-hosts' }],
    // The pod's QoS class stays what the tenant's containers make it: a Guaranteed pod's containers
    // all have limits equal to requests, so this one does too; any other pod gets none from it.
    ...(guaranteed(all) ? { resources: { requests: TINY, limits: TINY } } : {}),
    securityContext: {
      runAsUser: NOBODY,
      runAsGroup: NOBODY,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
  const mounted = (c: V1Container): V1Container =>
    c.volumeMounts?.some((m) => m.mountPath === '/etc/hosts')
      ? c
      : {
          ...c,
          volumeMounts: [
            ...(c.volumeMounts ?? []),
            // Writable, as the kubelet's own /etc/hosts is.
            { name: HOSTS_VOLUME, mountPath: '/etc/hosts', subPath: 'hosts' },
          ],
        };
  return {
    spec: {
      ...spec,
      initContainers: [rewrite, ...(spec.initContainers ?? []).map(mounted)],
      containers: spec.containers.map(mounted),
      volumes: [...(spec.volumes ?? []), { name: HOSTS_VOLUME, emptyDir: {} }],
    },
    rewritten: true,
  };
}
