/**
 * What a tenant pod sees of its cluster from inside (ADR 7): the environment a kubelet of the
 * tenant would give its containers (the tenant's `kubernetes` Service and service links) and the
 * DNS configuration that resolves through the tenant's DNS. Pure functions.
 */
import type { V1EnvVar, V1Pod, V1Service } from '@kubernetes/client-node';
import type { TenantContext } from './translate.js';

/** How the kubelet names a Service's variables: `my-svc` -> `MY_SVC`. */
const envName = (s: string): string => s.toUpperCase().replace(/-/g, '_');

/**
 * The variables a kubelet gives a container for Services (pkg/kubelet/envvars): host and ports,
 * plus the Docker link variables, for every Service with a ClusterIP.
 */
export function serviceEnv(services: readonly V1Service[]): V1EnvVar[] {
  const out: V1EnvVar[] = [];
  for (const svc of services) {
    const ip = svc.spec?.clusterIP;
    const ports = svc.spec?.ports ?? [];
    if (!ip || ip === 'None' || ports.length === 0) continue;
    const prefix = envName(svc.metadata!.name!);
    out.push({ name: `${prefix}_SERVICE_HOST`, value: ip });
    out.push({ name: `${prefix}_SERVICE_PORT`, value: String(ports[0]!.port) });
    for (const p of ports)
      if (p.name) out.push({ name: `${prefix}_SERVICE_PORT_${envName(p.name)}`, value: String(p.port) });
    ports.forEach((p, i) => {
      const proto = (p.protocol ?? 'TCP').toLowerCase();
      const url = `${proto}://${ip}:${p.port}`;
      if (i === 0) out.push({ name: `${prefix}_PORT`, value: url });
      const pp = `${prefix}_PORT_${p.port}_${proto.toUpperCase()}`;
      out.push({ name: pp, value: url });
      out.push({ name: `${pp}_PROTO`, value: proto });
      out.push({ name: `${pp}_PORT`, value: String(p.port) });
      out.push({ name: `${pp}_ADDR`, value: ip });
    });
  }
  return out;
}

/**
 * What a kubelet of the tenant would put in the environment: the tenant's `kubernetes` Service
 * always, the Services of the pod's namespace unless the pod turned service links off. Sorted by
 * Service name, as the kubelet does; the host pod's own links are off, so none of the host's
 * Services ever appear.
 */
export function tenantServiceEnv(ctx: TenantContext, pod: V1Pod, services: readonly V1Service[]): V1EnvVar[] {
  const ns = pod.metadata!.namespace!;
  const chosen = new Map<string, V1Service>();
  if (pod.spec?.enableServiceLinks !== false)
    for (const s of services) if (s.metadata?.namespace === ns) chosen.set(s.metadata.name!, s);
  const kubernetes = (clusterIP: string, port: number): V1Service => ({
    metadata: { name: 'kubernetes', namespace: 'default' },
    spec: { clusterIP, ports: [{ name: 'https', port, protocol: 'TCP' }] },
  });
  chosen.delete('kubernetes');
  if (ctx.tenantApi) chosen.set('kubernetes', kubernetes(ctx.tenantApi.clusterIP, ctx.tenantApi.port));
  const env = serviceEnv(
    [...chosen.values()].sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!)),
  );
  if (ctx.tenantApi) return env;
  // No address of the tenant API for pods: the host kubelet's `kubernetes` variables (which it
  // sets even with service links off) are blanked, so no pod is sent to the host's API server.
  return [...env, ...serviceEnv([kubernetes('0.0.0.0', 443)]).map((e) => ({ name: e.name, value: '' }))];
}

/**
 * The host pod's DNS: for ClusterFirst (the default) the tenant's DNS Service and search path,
 * as a kubelet of the tenant would write resolv.conf; the tenant's own dnsConfig merged in.
 */
export function tenantDns(
  ctx: TenantContext,
  pod: V1Pod,
): Pick<V1Pod['spec'] & object, 'dnsPolicy' | 'dnsConfig'> {
  const s = pod.spec!;
  const policy = s.dnsPolicy ?? 'ClusterFirst';
  // A pod on the host network resolves as its node does unless it asks for the cluster's DNS.
  const clusterFirst = policy === 'ClusterFirstWithHostNet' || (policy === 'ClusterFirst' && !s.hostNetwork);
  if (!ctx.clusterDNS || !clusterFirst)
    return {
      ...(s.dnsPolicy ? { dnsPolicy: s.dnsPolicy } : {}),
      ...(s.dnsConfig ? { dnsConfig: s.dnsConfig } : {}),
    };
  const domain = ctx.clusterDomain ?? 'cluster.local';
  const ns = pod.metadata!.namespace!;
  const own = s.dnsConfig ?? {};
  const options = [{ name: 'ndots', value: '5' }, ...(own.options ?? [])];
  const byName = new Map(options.map((o) => [o.name, o]));
  return {
    dnsPolicy: 'None',
    dnsConfig: {
      nameservers: [...new Set([ctx.clusterDNS, ...(own.nameservers ?? [])])],
      searches: [...new Set([`${ns}.svc.${domain}`, `svc.${domain}`, domain, ...(own.searches ?? [])])],
      options: [...byName.values()],
    },
  };
}
