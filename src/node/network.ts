/**
 * The machine-side network of the real node: the pods' bridge carrying the node address, routes
 * that keep every Service and pod range on this machine, and a forwarding guard so pod traffic
 * never leaves it. Done with iproute2 and iptables (there is no maintained Node.js netlink
 * binding); every change is undone by tearDownNodeNetwork.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { setTimeout as pause } from 'node:timers/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { procStartTime } from '../runtime/procfs.js';

const run = promisify(execFile);

/** The filter chain holding the forwarding guard, jumped to first from FORWARD. */
export const GUARD_CHAIN = 'KOSMOS-VC-NODE';
/** The filter chain keeping components' ports to loopback and the bridge, first in INPUT. */
export const INPUT_CHAIN = 'KOSMOS-VC-INPUT';

export interface NodeNetwork {
  bridge: string;
  nodeIP: string;
  /** Prefix length of the node address on the bridge (the node's pod range). */
  prefix: number;
  /** Ranges served through the node (Service ClusterIPs: kube-proxy DNATs them to pods). */
  routedToBridge: readonly string[];
  /** Ranges nothing serves here (simulated pods' IPs): dropped, never sent to the gateway. */
  blackholed: readonly string[];
  /**
   * Components' TCP ports (tenant API servers listen on every address so pods reach them): only
   * loopback and the bridge may connect, never another interface of the machine.
   */
  guardedPorts: readonly [number, number];
  /** Where the machine's previous sysctl values are kept for teardown. */
  sysctlStateFile: string;
}

async function quiet(cmd: string, args: string[]): Promise<boolean> {
  try {
    await run(cmd, args);
    return true;
  } catch {
    return false;
  }
}

/** The sysctls the node needs, saved before the first change and restored on teardown. */
const SYSCTLS = {
  '/proc/sys/net/ipv4/ip_forward': '1',
  '/proc/sys/net/bridge/bridge-nf-call-iptables': '1',
} as const;

const FAMILIES = ['iptables', 'ip6tables'] as const;

async function ensureChain(tool: string, chain: string, parent: string, rules: string[][]): Promise<void> {
  await quiet(tool, ['-w', '-N', chain]);
  await run(tool, ['-w', '-F', chain]);
  for (const r of rules) await run(tool, ['-w', '-A', chain, ...r]);
  if (!(await quiet(tool, ['-w', '-C', parent, '-j', chain])))
    await run(tool, ['-w', '-I', parent, '1', '-j', chain]);
}

async function removeChain(tool: string, chain: string, parent: string): Promise<void> {
  while (await quiet(tool, ['-w', '-D', parent, '-j', chain]));
  await quiet(tool, ['-w', '-F', chain]);
  await quiet(tool, ['-w', '-X', chain]);
}

export async function setUpNodeNetwork(n: NodeNetwork): Promise<void> {
  if (!(await quiet('ip', ['link', 'show', n.bridge])))
    await run('ip', ['link', 'add', n.bridge, 'type', 'bridge']);
  await run('ip', ['addr', 'replace', `${n.nodeIP}/${n.prefix}`, 'dev', n.bridge]);
  await run('ip', ['link', 'set', n.bridge, 'up']);
  for (const r of n.routedToBridge) await run('ip', ['route', 'replace', r, 'dev', n.bridge]);
  for (const r of n.blackholed) await run('ip', ['route', 'replace', 'blackhole', r]);
  // Pods reach Services through the node (DNAT, then forward): forwarding must be on. The guard
  // below drops anything a pod sends that would leave through another interface.
  if (!(await readFile(n.sysctlStateFile, 'utf8').catch(() => undefined))) {
    const before: Record<string, string> = {};
    for (const path of Object.keys(SYSCTLS)) before[path] = (await readFile(path, 'utf8')).trim();
    await writeFile(n.sysctlStateFile, JSON.stringify(before));
  }
  for (const [path, value] of Object.entries(SYSCTLS)) await writeFile(path, value);
  for (const tool of FAMILIES) {
    await ensureChain(tool, GUARD_CHAIN, 'FORWARD', [['-i', n.bridge, '!', '-o', n.bridge, '-j', 'DROP']]);
    // Both families: the API servers listen on every address, IPv6 ones included.
    await ensureChain(tool, INPUT_CHAIN, 'INPUT', [
      ['-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'RETURN'],
      ['-i', 'lo', '-j', 'RETURN'],
      ['-i', n.bridge, '-j', 'RETURN'],
      ['-p', 'tcp', '--dport', `${n.guardedPorts[0]}:${n.guardedPorts[1]}`, '-j', 'DROP'],
    ]);
  }
}

/**
 * Chains the kubelet makes for itself (its canaries and the localnet firewall) and never removes:
 * ours is the only kubelet on the machine, so they go with it.
 */
const KUBELET_CHAINS: readonly [table: string, chain: string, jumpsFrom: string[]][] = [
  ['filter', 'KUBE-FIREWALL', ['INPUT', 'OUTPUT']],
  ['filter', 'KUBE-KUBELET-CANARY', []],
  ['nat', 'KUBE-KUBELET-CANARY', []],
  ['mangle', 'KUBE-KUBELET-CANARY', []],
  ['mangle', 'KUBE-IPTABLES-HINT', []],
];

async function removeKubeletChains(): Promise<void> {
  for (const tool of ['iptables', 'ip6tables'])
    for (const [table, chain, from] of KUBELET_CHAINS) {
      for (const f of from) while (await quiet(tool, ['-w', '-t', table, '-D', f, '-j', chain]));
      await quiet(tool, ['-w', '-t', table, '-F', chain]);
      await quiet(tool, ['-w', '-t', table, '-X', chain]);
    }
}

/** Removes what setUpNodeNetwork made and restores ip_forward; safe to run twice. */
export async function tearDownNodeNetwork(n: NodeNetwork): Promise<void> {
  await removeKubeletChains();
  for (const tool of FAMILIES) {
    await removeChain(tool, GUARD_CHAIN, 'FORWARD');
    await removeChain(tool, INPUT_CHAIN, 'INPUT');
  }
  // Its own (`replace` makes them proto boot), never a guard route of a kwok-only environment.
  for (const r of n.blackholed) await quiet('ip', ['route', 'del', 'blackhole', r, 'proto', 'boot']);
  // Deleting the bridge removes its address and the routes through it.
  await quiet('ip', ['link', 'del', n.bridge]);
  const saved = await readFile(n.sysctlStateFile, 'utf8').catch(() => undefined);
  if (saved !== undefined) {
    for (const [path, value] of Object.entries(JSON.parse(saved) as Record<string, string>))
      await writeFile(path, value).catch(() => undefined);
    await rm(n.sysctlStateFile, { force: true });
  }
}

/** A range kept on this machine by a route that carries nothing. */
export interface GuardedRange {
  /** `unreachable`: a sender is told at once (ICMP); `blackhole`: packets are dropped silently. */
  type: 'unreachable' | 'blackhole';
  prefix: string;
}

/**
 * The routing protocol number guard routes carry (`proto`): marks them as ours, so a guard finds
 * one a crashed run left, and its removal never takes a route another one made for the same
 * range (the real node's `replace` resets the protocol). 240-254 are unassigned.
 */
export const GUARD_PROTO = '240';

/** The routes of the main table for exactly `prefix`, as `ip -j route show exact` lists them. */
async function routesFor(prefix: string): Promise<{ type?: string; protocol?: string }[]> {
  const { stdout } = await run('ip', ['-j', 'route', 'show', 'exact', prefix]);
  return JSON.parse(stdout || '[]') as { type?: string; protocol?: string }[];
}

/**
 * Who holds each guard route: a file per holder (`<pid>-<start time>-<token>`), a directory per
 * range; `<dir>.lock` while one changes them.
 */
export const GUARD_HOLDERS_DIR = '/run/kosmos-vc-route-guards';

/** A holder or lock's process still runs: the same PID, started at the same time. */
const running = (pid: number, started: string | undefined): boolean =>
  pid > 0 && started !== undefined && procStartTime(pid) === started;

/**
 * Runs `fn` while holding the guards' lock (created exclusively; one whose process is gone is
 * taken over), so that a holder joining and the last one leaving never cross: a join sees the
 * route the leaver has not deleted yet, or none and makes one.
 */
async function underGuardLock<T>(fn: () => Promise<T>): Promise<T> {
  const lock = `${GUARD_HOLDERS_DIR}.lock`;
  const me = `${process.pid} ${procStartTime(process.pid) ?? ''}`;
  for (let tries = 0; ; tries++) {
    try {
      await writeFile(lock, me, { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const [pid, started] = (await readFile(lock, 'utf8').catch(() => '')).split(' ');
      // Written in one call: an empty file is one being written; a process gone left it.
      if (pid && !running(Number(pid), started)) await rm(lock, { force: true });
      else if (tries >= 400) throw new Error(`the route guards' lock ${lock} is held by process ${pid}`);
      else await pause(25);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { force: true });
  }
}

/** The holders of a guard besides `mine` whose process runs (gone ones' files are removed). */
async function otherHolders(dir: string, mine: string): Promise<string[]> {
  const live: string[] = [];
  for (const holder of await readdir(dir).catch(() => [] as string[])) {
    if (holder === mine) continue;
    const [pid, started] = holder.split('-');
    if (running(Number(pid), started)) live.push(holder);
    else await rm(join(dir, holder), { force: true });
  }
  return live;
}

/**
 * Routes that keep ranges on this machine where no real node routes them (kwok nodes only): the
 * Service range, so that an API server calling a webhook or an aggregated API at a ClusterIP is
 * refused here instead of sending to the default gateway, and kwok's simulated pod IPs. A range
 * with another route for exactly that prefix (another environment's real node) is left as it
 * is; otherwise this process holds a guard route (`GUARD_PROTO`), made if none is there, shared
 * with any other running holder (a file per holder under `GUARD_HOLDERS_DIR`, changed under a
 * lock), and one a crashed run left is taken over. A broader route (a VPN's 10.0.0.0/8) does not
 * count: the guard, more specific, wins for its range. `remove` lets go, and deletes the guard
 * route once no running process holds it, never another route. A range whose route cannot be
 * read or made (not root) is not held, and `warn` is told why, once.
 */
export async function guardRanges(
  ranges: readonly GuardedRange[],
  warn: (message: string) => void,
): Promise<{ held: GuardedRange[]; remove(): Promise<void> }> {
  const held: GuardedRange[] = [];
  const holders = (r: GuardedRange) => join(GUARD_HOLDERS_DIR, r.prefix.replace('/', '_'));
  const mine = `${process.pid}-${procStartTime(process.pid) ?? ''}-${randomBytes(4).toString('hex')}`;
  let warned = false;
  try {
    await underGuardLock(async () => {
      for (const r of ranges) {
        try {
          const existing = await routesFor(r.prefix);
          if (existing.some((e) => e.protocol !== GUARD_PROTO)) continue;
          if (existing.length === 0)
            await run('ip', ['route', 'add', r.type, r.prefix, 'proto', GUARD_PROTO]);
          // The holders' directory too, with the first holder: a run that holds nothing (all its
          // ranges routed already) leaves none behind.
          await mkdir(holders(r), { recursive: true });
          await writeFile(join(holders(r), mine), '');
          held.push(r);
        } catch (e) {
          if (!warned) {
            const why = String((e as { stderr?: string }).stderr ?? e).trim();
            warn(`${r.prefix} is not kept on this machine (ip route add ${r.type} ${r.prefix}: ${why})`);
          }
          warned = true;
        }
      }
    });
  } catch (e) {
    if (!warned) warn(`the Service and pod ranges are not kept on this machine: ${String(e)}`);
  }
  return {
    held,
    async remove() {
      const leaving = held.splice(0);
      if (leaving.length === 0) return;
      await underGuardLock(async () => {
        for (const r of leaving) {
          await rm(join(holders(r), mine), { force: true });
          if ((await otherHolders(holders(r), mine)).length > 0) continue;
          // Whatever type the guard route has (one a crashed run left may differ): ours only.
          for (const e of await routesFor(r.prefix).catch(() => []))
            if (e.protocol === GUARD_PROTO)
              await quiet('ip', ['route', 'del', e.type ?? r.type, r.prefix, 'proto', GUARD_PROTO]);
          // Nothing left behind (a joiner makes its directory again, under the same lock).
          await rm(holders(r), { recursive: true, force: true });
        }
        await rmdir(GUARD_HOLDERS_DIR).catch(() => undefined);
      }).catch(() => undefined);
    },
  };
}

/**
 * The first line of `ip route get` for an address (the route a packet to it takes), or
 * `unroutable <why>` where none would carry it (an `unreachable` route: "No route to host"; a
 * `blackhole`: "Invalid argument").
 */
export async function routeOf(ip: string): Promise<string> {
  const { stdout } = await run('ip', ['route', 'get', ip]).catch((e: { stderr?: string }) => ({
    stdout: `unroutable ${(e.stderr ?? '').trim()}`,
  }));
  return stdout.trim().split('\n')[0]!;
}
