/**
 * What a tenant pod may ask of its host node: the Pod Security "baseline" level, and volumes that
 * stay off host storage, unless the tenant is privileged (ADR 8). Pure checks; translate.ts
 * applies them when it makes a host pod.
 */
import type { V1Pod } from '@kubernetes/client-node';

/** A tenant pod clusterTree will not run on the host, with the reason the tenant sees. */
export class PodRefused extends Error {
  override readonly name = 'PodRefused';
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** Volume sources a host pod may use: everything else reaches host storage or host paths. */
const ALLOWED_VOLUMES = new Set([
  'name',
  'configMap',
  'secret',
  'projected',
  'downwardAPI',
  'emptyDir',
  'image',
]);
/** Capabilities the Pod Security "baseline" level allows to be added. */
const BASELINE_CAPABILITIES = new Set([
  'AUDIT_WRITE',
  'CHOWN',
  'DAC_OVERRIDE',
  'FOWNER',
  'FSETID',
  'KILL',
  'MKNOD',
  'NET_BIND_SERVICE',
  'SETFCAP',
  'SETGID',
  'SETPCAP',
  'SETUID',
  'SYS_CHROOT',
]);
const SAFE_SYSCTLS = new Set([
  'kernel.shm_rmid_forced',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.ip_unprivileged_port_start',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range',
  'net.ipv4.ip_local_reserved_ports',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
]);
const SELINUX_TYPES = new Set([
  '',
  'container_t',
  'container_init_t',
  'container_kvm_t',
  'container_engine_t',
]);

interface Hardening {
  seLinuxOptions?: { type?: string; user?: string; role?: string };
  seccompProfile?: { type?: string };
  appArmorProfile?: { type?: string };
  windowsOptions?: { hostProcess?: boolean };
}

function hardeningProblems(where: string, sc: Hardening | undefined, why: string[]): void {
  if (!sc) return;
  const se = sc.seLinuxOptions;
  if (se && (!SELINUX_TYPES.has(se.type ?? '') || se.user || se.role))
    why.push(`SELinux options in ${where}`);
  if (sc.seccompProfile?.type === 'Unconfined') why.push(`unconfined seccomp in ${where}`);
  if (sc.appArmorProfile?.type === 'Unconfined') why.push(`unconfined AppArmor in ${where}`);
  if (sc.windowsOptions?.hostProcess) why.push(`hostProcess in ${where}`);
}

/**
 * Refuses what the tenant's pod security level does not allow, and says where a pod may run:
 * `confined` when a privileged tenant's virtual-node pod asks for host access, which it may have
 * only on the tenant's own promoted nodes (it is pinned there), never on shared host nodes.
 */
export function refuse(
  podSecurity: 'baseline' | 'privileged' | undefined,
  pod: V1Pod,
  hostNode: string | undefined,
): { confined: boolean } {
  const why = hostAccess(pod);
  if (why.length === 0) return { confined: false };
  // A privileged tenant owns its promoted nodes (the operator allowed it to be root there).
  if (podSecurity === 'privileged') return { confined: hostNode === undefined };
  throw new PodRefused(
    'HostAccessForbidden',
    `kosmos-vc runs tenant pods on shared host nodes and refuses host access: ${why.join(', ')}`,
  );
}

/**
 * What of the host a pod asks for beyond the Pod Security "baseline" level (the host namespace
 * enforces the tenant's level too, as a backstop), plus volumes that reach host storage: only
 * configMap, secret, projected, downwardAPI, emptyDir and image volumes are translated.
 */
function hostAccess(pod: V1Pod): string[] {
  const s = pod.spec!;
  const why: string[] = [];
  if (s.hostNetwork) why.push('hostNetwork');
  if (s.hostPID) why.push('hostPID');
  if (s.hostIPC) why.push('hostIPC');
  for (const v of s.volumes ?? []) {
    const kinds = Object.keys(v).filter((k) => (v as unknown as Record<string, unknown>)[k] !== undefined);
    const other = kinds.filter((k) => !ALLOWED_VOLUMES.has(k));
    if (other.length > 0) why.push(`${other.join('/')} volume ${v.name}`);
  }
  hardeningProblems('the pod', s.securityContext, why);
  for (const sysctl of s.securityContext?.sysctls ?? [])
    if (!SAFE_SYSCTLS.has(sysctl.name)) why.push(`sysctl ${sysctl.name}`);
  for (const c of [...(s.initContainers ?? []), ...s.containers, ...(s.ephemeralContainers ?? [])]) {
    const sc = c.securityContext;
    if (sc?.privileged) why.push(`privileged container ${c.name}`);
    for (const cap of sc?.capabilities?.add ?? [])
      if (!BASELINE_CAPABILITIES.has(cap)) why.push(`capability ${cap} in ${c.name}`);
    if (sc?.procMount && sc.procMount !== 'Default') why.push(`procMount ${sc.procMount} in ${c.name}`);
    hardeningProblems(`container ${c.name}`, sc, why);
    for (const p of c.ports ?? []) if (p.hostPort) why.push(`host port ${p.hostPort} in ${c.name}`);
  }
  return why;
}
