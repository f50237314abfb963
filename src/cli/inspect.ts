/**
 * `kosmos-vc get | describe | kubeconfig`: what a user needs of a VirtualCluster, without
 * jsonpath or base64. The formatting is pure (tested on its own); the reads go through the host
 * cluster's API with the caller's KUBECONFIG.
 */
import type { HostCluster } from '../activities/hostCluster.js';
import { hostCluster } from './host.js';
import { isNotFound } from '../api/kubeClient.js';
import {
  CERTIFICATE_DEFAULTS,
  DEFAULT_POD_SECURITY,
  GROUP,
  PLURAL,
  VERSION,
  VirtualCluster,
} from '../api/virtualCluster.js';
import { hostNamespace } from '../clustertree/naming.js';
import { parseTarget } from './resize.js';

/** A command that cannot do what it was asked (nothing of that name, nothing published yet): exit 1. */
export class CommandError extends Error {
  override readonly name = 'CommandError';
}

/** A VirtualCluster with the creation time the API gave it (not part of the validated shape). */
export interface Listed {
  vc: VirtualCluster;
  created?: string;
}

/** kubectl's age: the largest unit or two (`45s`, `3m20s`, `5h`, `2d3h`, `40d`). */
export function age(since: string | undefined, now: Date): string {
  const t = since ? Date.parse(since) : NaN;
  if (Number.isNaN(t)) return '<unknown>';
  const s = Math.max(0, Math.floor((now.getTime() - t) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 ? `${m}m${s % 60}s` : `${m}m`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return h < 8 && m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return d < 8 && h % 24 ? `${d}d${h % 24}h` : `${d}d`;
}

/** A memory amount for people: plain byte counts (as status holds them) in Mi or Gi. */
export function memory(q: string | undefined): string {
  if (q === undefined) return '0';
  if (!/^[0-9]+$/.test(q)) return q;
  const n = Number(q);
  for (const [unit, size] of [
    ['Gi', 2 ** 30],
    ['Mi', 2 ** 20],
  ] as const)
    if (n >= size) {
      const v = n / size;
      return `${Number.isInteger(v) ? v : v.toFixed(1)}${unit}`;
    }
  return q;
}

/** Rows as aligned columns, as kubectl prints them. */
export function columns(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3)))
        .join('')
        .trimEnd(),
    )
    .join('\n');
}

/** `kosmos-vc get`: one line per VirtualCluster. */
export function table(items: Listed[], allNamespaces: boolean, now: Date): string {
  if (items.length === 0) return 'No VirtualClusters found.';
  const head = [
    ...(allNamespaces ? ['NAMESPACE'] : []),
    'NAME',
    'PHASE',
    'NODES',
    'CPU',
    'MEMORY',
    'ENDPOINT',
    'AGE',
  ];
  const rows = items.map(({ vc, created }) => {
    const p = vc.status?.promoted;
    return [
      ...(allNamespaces ? [vc.metadata.namespace] : []),
      vc.metadata.name,
      vc.metadata.deletionTimestamp ? 'Deleting' : (vc.status?.phase ?? 'Pending'),
      String(p?.nodeCount ?? 0),
      p?.cpu ?? '0',
      memory(p?.memory),
      vc.status?.apiServerEndpoint ?? '<none>',
      age(created, now),
    ];
  });
  return columns([head, ...rows]);
}

/** `kosmos-vc describe`: everything a user reads about one VirtualCluster, kubectl-style. */
export function describe(item: Listed, now: Date): string {
  const { vc, created } = item;
  const s = vc.status;
  const p = s?.promoted;
  const spec = vc.spec.promoteResources;
  const lines = [
    `Name:             ${vc.metadata.name}`,
    `Namespace:        ${vc.metadata.namespace}`,
    `Created:          ${created ?? '<unknown>'} (${age(created, now)} ago)`,
    `Phase:            ${vc.metadata.deletionTimestamp ? 'Deleting' : (s?.phase ?? 'Pending')}`,
    `Reason:           ${s?.reason ?? '<none>'}`,
    `Message:          ${s?.message ?? '<none>'}`,
    `API server:       ${s?.apiServerEndpoint ?? '<none>'}`,
    `Kubeconfig:       ${s?.kubeconfigSecretRef ? `Secret ${vc.metadata.namespace}/${s.kubeconfigSecretRef.name} (key ${s.kubeconfigSecretRef.key}); kosmos-vc kubeconfig ${vc.metadata.namespace}/${vc.metadata.name}` : '<none yet>'}`,
    `Host namespace:   ${hostNamespace({ namespace: vc.metadata.namespace, name: vc.metadata.name, uid: vc.metadata.uid })}`,
    `Workflow:         ${s?.workflowId ?? '<none>'}`,
    `Pod security:     ${vc.spec.podSecurity ?? DEFAULT_POD_SECURITY}`,
    `Generation:       ${vc.metadata.generation ?? 0} (observed ${s?.observedGeneration ?? 0})`,
    'Requested:',
    `  Nodes:          ${spec?.nodes?.length ? spec.nodes.join(', ') : '<none>'}`,
    `  Resources:      ${spec?.resources ? `cpu ${spec.resources.cpu ?? '0'}, memory ${spec.resources.memory ?? '0'}` : '<none>'}`,
    'Promoted:',
    `  Nodes:          ${p?.nodes?.length ? p.nodes.join(', ') : '<none>'}`,
    `  Resources:      cpu ${p?.cpu ?? '0'}, memory ${memory(p?.memory)}`,
    ...(p?.pending?.length
      ? ['  Not promoted:', ...p.pending.map((x) => `    ${x.node}: ${x.reason}: ${x.message}`)]
      : []),
    ...certificateLines(vc),
    'Conditions:',
  ];
  const conditions = s?.conditions ?? [];
  if (conditions.length === 0) lines.push('  <none>');
  else
    lines.push(
      columns([
        ['  TYPE', 'STATUS', 'REASON', 'AGE', 'MESSAGE'],
        ...conditions.map((c) => [
          `  ${c.type}`,
          c.status,
          c.reason ?? '',
          age(c.lastTransitionTime, now),
          c.message ?? '',
        ]),
      ]),
    );
  return lines.join('\n');
}

function certificateLines(vc: VirtualCluster): string[] {
  const c = vc.status?.certificates;
  if (!c?.notAfter) return [];
  return [
    'Certificates:',
    `  Valid until:    ${c.notAfter} (renewed from ${c.renewAt ?? '?'}; lifetime ${vc.spec.certificates?.validity ?? CERTIFICATE_DEFAULTS.validity})`,
    `  CA:             ${c.caFingerprint ?? '?'}, valid until ${c.caNotAfter ?? '?'} (rotation ${c.caRotation ?? 0})`,
    ...(c.previousCARetiresAt
      ? [`  Previous CA:    ${c.previousCAFingerprint ?? '?'}, trusted until ${c.previousCARetiresAt}`]
      : []),
  ];
}

/** The admin kubeconfig of a VirtualCluster, as YAML text; a clear error while it has none. */
export function kubeconfigText(vc: VirtualCluster): string {
  const b64 = vc.spec.kubeconfig;
  if (!b64)
    throw new CommandError(
      `VirtualCluster ${vc.metadata.namespace}/${vc.metadata.name} has no kubeconfig yet (phase ${vc.status?.phase ?? 'Pending'}): it is published once the control plane is up`,
    );
  return Buffer.from(b64, 'base64').toString('utf8');
}

function listed(raw: unknown, skipped?: (what: string) => void): Listed | undefined {
  const parsed = VirtualCluster.safeParse(raw);
  if (!parsed.success) {
    const m = (raw as { metadata?: { namespace?: string; name?: string } }).metadata;
    skipped?.(
      `${m?.namespace ?? '?'}/${m?.name ?? '?'}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
    return undefined;
  }
  const created = (raw as { metadata?: { creationTimestamp?: string } }).metadata?.creationTimestamp;
  return { vc: parsed.data, ...(created ? { created } : {}) };
}

async function readOne(host: HostCluster, target: { namespace: string; name: string }): Promise<Listed> {
  const raw: unknown = await host.custom
    .getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, ...target })
    .catch((e: unknown) => {
      if (isNotFound(e))
        throw new CommandError(`VirtualCluster ${target.namespace}/${target.name} not found`);
      throw e;
    });
  const item = listed(raw);
  if (!item)
    throw new Error(`VirtualCluster ${target.namespace}/${target.name} does not have the expected shape`);
  return item;
}

export async function getCommand(
  opts: { target?: string; namespace?: string; allNamespaces?: boolean; kubeconfig?: string },
  out: (text: string) => void,
  warn: (text: string) => void = (t) => process.stderr.write(`${t}\n`),
): Promise<void> {
  const host = hostCluster(opts.kubeconfig);
  const now = new Date();
  if (opts.target) {
    out(table([await readOne(host, parseTarget(opts.target, opts.namespace))], false, now));
    return;
  }
  const list = await host.listVirtualClusters(opts.allNamespaces ? undefined : (opts.namespace ?? 'default'));
  const items = list.items
    .map((raw) =>
      listed(raw, (what) => warn(`warning: skipped a VirtualCluster that does not parse: ${what}`)),
    )
    .filter((x): x is Listed => x !== undefined);
  items.sort((a, b) =>
    `${a.vc.metadata.namespace}/${a.vc.metadata.name}`.localeCompare(
      `${b.vc.metadata.namespace}/${b.vc.metadata.name}`,
    ),
  );
  out(table(items, opts.allNamespaces ?? false, now));
}

export async function describeCommand(
  opts: { target: string; namespace?: string; kubeconfig?: string },
  out: (text: string) => void,
): Promise<void> {
  const host = hostCluster(opts.kubeconfig);
  out(describe(await readOne(host, parseTarget(opts.target, opts.namespace)), new Date()));
}

export async function kubeconfigCommand(
  opts: { target: string; namespace?: string; kubeconfig?: string },
  out: (text: string) => void,
): Promise<void> {
  const host = hostCluster(opts.kubeconfig);
  const { vc } = await readOne(host, parseTarget(opts.target, opts.namespace));
  const text = kubeconfigText(vc);
  out(text.endsWith('\n') ? text.slice(0, -1) : text);
}
