/**
 * Memory and density (issue 10, targets 1 and 2). Tenants are added one by one, each promoting a
 * kwok node of its own, until --tenants are Ready or something runs out. After each one: the
 * memory of every tenant process (RSS, and PSS: shared pages such as the binaries' code divided
 * among the processes that map them) and the machine's MemAvailable. Once all are idle for
 * --settle seconds: each tenant's memory, and `kubectl get ns` (GET /api/v1/namespaces)
 * --requests times per tenant, one request at a time (the other tenants idle).
 *
 * Baseline, same run: the embedded host's own control plane (the same four binaries, a plain
 * cluster) for memory, and GET /api/v1/namespaces on the host's apiserver for latency.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { availableParallelism } from 'node:os';
import type { VirtualCluster } from '../src/api/virtualCluster.js';
import {
  createKwokNodes,
  createVC,
  memAvailableMiB,
  memoryMiB,
  percentile,
  readyVC,
  say,
  tenantKc,
  tenantCpuSeconds,
  tenantMemory,
  writePlot,
} from './common.js';
import { ratio, type Scenario } from './scenario.js';

/** Below this much available memory no further tenant is added. */
const MEMORY_RESERVE_MIB = 1536;
const TARGET_MIB = 350;

export const density: Scenario = {
  summary: 'tenants added until --tenants are Ready: memory per idle tenant, get ns p99 with all idle',
  quick: { tenants: 3, settle: 20, requests: 20 },
  full: { tenants: 30, settle: 60, requests: 50 },
  async run({ env, out }, o) {
    const host = env.operator.host;
    const hostPids = new Map<string, number>();
    for (const s of await env.embeddedRuntime.list('host'))
      if (s.pid && ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'].includes(s.name))
        hostPids.set(s.name, s.pid);
    const hostMemory = async () => {
      let rss = 0;
      let pss = 0;
      for (const pid of hostPids.values()) {
        const m = await memoryMiB(pid);
        rss += m.rss;
        pss += m.pss;
      }
      return { rss, pss };
    };

    const names = Array.from({ length: o.tenants! }, (_, i) => `d-${i}`);
    await createKwokNodes(host.core, names, 110);
    const available0 = await memAvailableMiB();
    const tenants: VirtualCluster[] = [];
    const curve: { tenants: number; series: string; mib: number }[] = [];
    const readyMs: number[] = [];
    let stoppedBy = '';
    for (const name of names) {
      if ((await memAvailableMiB()) < MEMORY_RESERVE_MIB) {
        stoppedBy = `memory: less than ${MEMORY_RESERVE_MIB} MiB available`;
        break;
      }
      const t0 = performance.now();
      try {
        await createVC(host, name, { promoteResources: { nodes: [name] } });
        tenants.push(await readyVC(host, name));
      } catch (e) {
        stoppedBy = `${name} did not become Ready: ${(e as Error).message}`;
        break;
      }
      readyMs.push(performance.now() - t0);
      const n = tenants.length;
      let rss = 0;
      let pss = 0;
      for (const vc of tenants) {
        const m = await tenantMemory(env.operator, vc);
        rss += m.rss;
        pss += m.pss;
      }
      const machine = (available0 - (await memAvailableMiB())) / n;
      curve.push(
        { tenants: n, series: 'RSS per tenant', mib: rss / n },
        { tenants: n, series: 'PSS per tenant', mib: pss / n },
        { tenants: n, series: 'machine memory per tenant', mib: machine },
      );
      say(
        `${n} Ready in ${(readyMs.at(-1)! / 1000).toFixed(1)} s: per tenant RSS ${(rss / n).toFixed(0)} MiB, PSS ${(pss / n).toFixed(0)} MiB, machine ${machine.toFixed(0)} MiB`,
      );
    }
    if (!stoppedBy) stoppedBy = `nothing: all ${tenants.length} requested tenants are Ready`;

    say(`all idle for ${o.settle} s...`);
    const cpu0 = await tenantCpuSeconds(env.operator, tenants);
    const s0 = performance.now();
    await new Promise((r) => setTimeout(r, o.settle! * 1000));
    const cpu1 = await tenantCpuSeconds(env.operator, tenants);
    const window = (performance.now() - s0) / 1000;
    // Cores an idle tenant keeps busy, by component (heartbeats, leases, controllers' resyncs).
    const idleCores = Object.fromEntries(
      Object.entries(cpu1).map(([c, v]) => [c, (v - (cpu0[c] ?? v)) / window / Math.max(1, tenants.length)]),
    );
    const idleTotal = Object.values(idleCores).reduce((a, b) => a + b, 0);
    const per = await Promise.all(tenants.map((vc) => tenantMemory(env.operator, vc)));
    const n = Math.max(1, per.length);
    const rss = per.reduce((a, m) => a + m.rss, 0) / n;
    const pss = per.reduce((a, m) => a + m.pss, 0) / n;
    const machine = (available0 - (await memAvailableMiB())) / n;
    const components: Record<string, number> = {};
    for (const m of per)
      for (const [c, v] of Object.entries(m.components)) components[c] = (components[c] ?? 0) + v / n;
    const plain = await hostMemory();

    // get ns on each tenant in turn, one request at a time: every other tenant stays idle.
    const getNs = async (core: CoreV1Api) => {
      const t = performance.now();
      await core.listNamespace();
      return performance.now() - t;
    };
    const clients = tenants.map((vc) => tenantKc(vc).makeApiClient(CoreV1Api));
    const hostLatency: number[] = [];
    const tenantLatency: number[] = [];
    for (let i = 0; i < o.requests!; i++) {
      hostLatency.push(await getNs(host.core));
      for (const core of clients) tenantLatency.push(await getNs(core));
    }
    const p99 = percentile(tenantLatency, 99);
    const hostP99 = percentile(hostLatency, 99);

    const curveFile = await writePlot(out, 'density-memory', {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: 'Memory per idle tenant as tenants are added (MiB)',
      width: 480,
      height: 260,
      data: { values: curve },
      layer: [
        {
          mark: { type: 'line', point: true },
          encoding: {
            x: { field: 'tenants', type: 'quantitative', title: 'tenants Ready' },
            y: { field: 'mib', type: 'quantitative', title: 'MiB per tenant' },
            color: { field: 'series', type: 'nominal', title: null },
          },
        },
        { mark: { type: 'rule', strokeDash: [4, 4] }, encoding: { y: { datum: TARGET_MIB } } },
      ],
    });
    const latencyFile = await writePlot(out, 'density-get-ns', {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: `GET /api/v1/namespaces with ${tenants.length} idle tenants (ms)`,
      width: 480,
      height: 200,
      data: {
        values: [
          ...tenantLatency.map((ms) => ({ ms, where: 'tenants' })),
          ...hostLatency.map((ms) => ({ ms, where: 'host (baseline)' })),
        ],
      },
      mark: 'tick',
      encoding: {
        x: { field: 'ms', type: 'quantitative', scale: { type: 'log' } },
        y: { field: 'where', type: 'nominal', title: null },
      },
    });

    const f = (x: number) => x.toFixed(0).padStart(6);
    return {
      lines: [
        `density: ${tenants.length} of ${o.tenants} tenants Ready at once (stopped by ${stoppedBy})`,
        `  tenant apply -> Ready: first ${(readyMs[0]! / 1000).toFixed(1)} s, last ${(readyMs.at(-1)! / 1000).toFixed(1)} s`,
        '',
        `memory per idle tenant after ${o.settle} s (MiB)     figure  baseline: a plain control plane (host)  ratio`,
        `  RSS, all its processes                 ${f(rss)}  ${f(plain.rss)}  ${ratio(rss, plain.rss)}   target ${TARGET_MIB}: ${rss <= TARGET_MIB ? 'met' : `missed by ${(rss - TARGET_MIB).toFixed(0)}`}`,
        `  PSS (shared code counted once)         ${f(pss)}  ${f(plain.pss)}  ${ratio(pss, plain.pss)}`,
        `  machine (MemAvailable drop / tenants)  ${f(machine)}`,
        `  RSS by component: ${Object.entries(components)
          .map(([c, v]) => `${c} ${v.toFixed(0)}`)
          .join(', ')}`,
        `CPU per idle tenant over ${o.settle} s: ${(idleTotal * 100).toFixed(1)} % of a core (${Object.entries(
          idleCores,
        )
          .map(([c, v]) => `${c} ${(v * 100).toFixed(1)}`)
          .join(
            ', ',
          )}); ${tenants.length} tenants keep ${(idleTotal * tenants.length).toFixed(2)} of ${availableParallelism()} cores busy`,
        '',
        `GET /api/v1/namespaces, ${o.requests} per tenant, one tenant at a time, the others idle (ms)`,
        `  p99 tenants ${p99.toFixed(1)}, host alone (baseline) ${hostP99.toFixed(1)}, ratio ${ratio(p99, hostP99)}; target < 1000: ${p99 < 1000 ? 'met' : 'missed'}`,
        `  plots: ${curveFile}, ${latencyFile}`,
      ],
      json: {
        tenantsReady: tenants.length,
        stoppedBy,
        readyMs,
        perTenant: { rssMiB: rss, pssMiB: pss, machineMiB: machine, components, idleCores },
        plainControlPlane: plain,
        getNamespaces: {
          p50: percentile(tenantLatency, 50),
          p99,
          hostP50: percentile(hostLatency, 50),
          hostP99,
        },
        curve,
      },
    };
  },
};
