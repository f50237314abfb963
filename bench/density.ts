/**
 * Memory and density (issue 10, targets 1 and 2). Tenants are added one by one, each promoting a
 * kwok node of its own, until --tenants are Ready or something runs out. After each one: the
 * memory of every tenant process (RSS, and PSS: shared pages such as the binaries' code divided
 * among the processes that map them) and the machine's MemAvailable. Once all are idle for
 * --settle seconds: each tenant's CPU over --settle seconds more, its memory, and `kubectl get
 * ns` (GET /api/v1/namespaces) --requests times per tenant, one request at a time (the other
 * tenants idle).
 *
 * Baseline, same run: a plain control plane of the same four binaries, started directly and as
 * idle as the tenants: its memory and CPU next to a tenant's control-plane processes (etcd and
 * kube-control-plane by default, or four), and GET /api/v1/namespaces on its apiserver.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { join } from 'node:path';
import { ONE_PROCESS_SETTLES_MS } from '../src/runtime/controlPlane.js';
import { ProcessRuntime } from '../src/runtime/processRuntime.js';
import { createLogger } from '../src/worker/logger.js';
import { availableParallelism } from 'node:os';
import type { VirtualCluster } from '../src/api/virtualCluster.js';
import {
  cpuSecondsOfRuntime,
  createKwokNodes,
  directControlPlane,
  memoryOfRuntime,
  createVC,
  memAvailableMiB,
  sharedClusterTreeMiB,
  percentile,
  readyVC,
  say,
  tenantKc,
  tenantCpuSeconds,
  tenantMemory,
  writePlot,
} from './common.js';
import { ratio, type BenchResult, type Scenario } from './scenario.js';

/** Below this much available memory no further tenant is added. */
const MEMORY_RESERVE_MIB = 1536;
const TARGET_MIB = 350;

export const density: Scenario = {
  summary: 'tenants added until --tenants are Ready: memory per idle tenant, get ns p99 with all idle',
  quick: { tenants: 3, settle: 20, requests: 20 },
  full: { tenants: 30, settle: 60, requests: 50 },
  async run({ env, out, oneProcess }, o) {
    const host = env.operator.host;
    // The baseline: a plain control plane of the same four binaries, started directly and idle.
    const direct = new ProcessRuntime({
      root: join(env.root, 'direct'),
      logger: createLogger({ level: 'error' }),
    });
    try {
      const plainPlane = await directControlPlane(env, direct, 'plain');
      await plainPlane.start();
      return await measure(plainPlane.layout.id, plainPlane.kc);
    } finally {
      await direct.shutdown();
    }

    async function measure(plainId: string, plainKc: KubeConfig): Promise<BenchResult> {
      const names = Array.from({ length: o.tenants! }, (_, i) => `d-${i}`);
      await createKwokNodes(host.core, names, 110);
      // The worker's shared clusterTree runs before any tenant (ADR 12, decision 13): its memory
      // then is the tenants' too, added back to what MemAvailable shows them taking.
      const sharedAtStart = await sharedClusterTreeMiB(env.operator);
      const available0 = (await memAvailableMiB()) + sharedAtStart;
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

      if (tenants.length === 0)
        return {
          lines: [`density: no tenant became Ready (stopped by ${stoppedBy})`],
          json: { tenantsReady: 0, stoppedBy },
        };
      // One process sets its lean GC target a while after it started: every tenant's has, first.
      const idle = Math.max(o.settle!, oneProcess ? ONE_PROCESS_SETTLES_MS / 1000 + 2 : 0);
      say(`all idle for ${idle} s, then CPU measured over ${o.settle} s more...`);
      await new Promise((r) => setTimeout(r, idle * 1000));
      const cpu0 = await tenantCpuSeconds(env.operator, tenants);
      const plain0 = await cpuSecondsOfRuntime(direct, plainId);
      const s0 = performance.now();
      await new Promise((r) => setTimeout(r, o.settle! * 1000));
      const cpu1 = await tenantCpuSeconds(env.operator, tenants);
      const plainCores =
        ((await cpuSecondsOfRuntime(direct, plainId)) - plain0) / ((performance.now() - s0) / 1000);
      const window = (performance.now() - s0) / 1000;
      // Cores an idle tenant keeps busy, by component (heartbeats, leases, controllers' resyncs).
      const idleCores = Object.fromEntries(
        Object.entries(cpu1).map(([c, v]) => [c, (v - (cpu0[c] ?? v)) / window / tenants.length]),
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
      const plain = await memoryOfRuntime(direct, plainId);
      // The tenant's control-plane processes (four, or etcd and kube-control-plane): the plain
      // control plane's counterpart.
      const cpRss = rss - (components.clustertree ?? 0);
      const cpPss = pss - per.reduce((a, m) => a + (m.pssByComponent.clustertree ?? 0), 0) / n;

      // get ns on each tenant in turn, one request at a time: every other tenant stays idle.
      const getNs = async (core: CoreV1Api) => {
        const t = performance.now();
        await core.listNamespace();
        return performance.now() - t;
      };
      const clients = tenants.map((vc) => tenantKc(vc).makeApiClient(CoreV1Api));
      const plainCore = plainKc.makeApiClient(CoreV1Api);
      const hostLatency: number[] = [];
      const tenantLatency: number[] = [];
      for (let i = 0; i < o.requests!; i++) {
        hostLatency.push(await getNs(plainCore));
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
              color: { field: 'series', type: 'nominal', title: null, legend: { labelLimit: 400 } },
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
            ...hostLatency.map((ms) => ({ ms, where: 'plain control plane (baseline)' })),
          ],
        },
        mark: 'tick',
        encoding: {
          x: { field: 'ms', type: 'quantitative', scale: { type: 'log' } },
          y: { field: 'where', type: 'nominal', title: null },
        },
      });

      const f = (x: number) => x.toFixed(0).padStart(6);
      const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
      return {
        lines: [
          `density: ${tenants.length} of ${o.tenants} tenants Ready at once (stopped by ${stoppedBy})`,
          `  tenant apply -> Ready: first ${(readyMs[0]! / 1000).toFixed(1)} s, last ${(readyMs.at(-1)! / 1000).toFixed(1)} s`,
          '',
          `memory per idle tenant (MiB)                      figure  baseline  ratio   baseline: a plain control plane`,
          `  RSS, all its processes                        ${f(rss)}            target ${TARGET_MIB}: ${rss <= TARGET_MIB ? 'met' : `missed by ${(rss - TARGET_MIB).toFixed(0)}`}`,
          `  RSS, its control-plane processes              ${f(cpRss)}  ${f(plain.rss)}  ${ratio(cpRss, plain.rss)}`,
          `  PSS, all its processes (shared code shared)   ${f(pss)}`,
          `  PSS, its control-plane processes              ${f(cpPss)}  ${f(plain.pss)}  ${ratio(cpPss, plain.pss)}`,
          `  machine (MemAvailable drop / tenants)         ${f(machine)}            target ${TARGET_MIB}: ${machine <= TARGET_MIB ? 'met' : 'missed'}`,
          `  RSS by component: ${Object.entries(components)
            .map(([c, v]) => `${c} ${v.toFixed(0)}`)
            .join(', ')}`,
          '',
          `CPU of an idle tenant over ${o.settle} s: ${pct(idleTotal)} of a core (${Object.entries(idleCores)
            .map(([c, v]) => `${c} ${pct(v)}`)
            .join(', ')})`,
          `  the plain control plane: ${pct(plainCores)}; ${tenants.length} tenants keep ${(idleTotal * tenants.length).toFixed(2)} of ${availableParallelism()} cores busy`,
          '',
          `GET /api/v1/namespaces, ${o.requests} per tenant, one tenant at a time, the others idle (ms)`,
          `  p99 tenants ${p99.toFixed(1)}, the plain control plane ${hostP99.toFixed(1)}, ratio ${ratio(p99, hostP99)}; target < 1000: ${p99 < 1000 ? 'met' : 'missed'}`,
          `  plots: ${curveFile}, ${latencyFile}`,
        ],
        json: {
          tenantsReady: tenants.length,
          stoppedBy,
          readyMs,
          perTenant: {
            rssMiB: rss,
            pssMiB: pss,
            controlPlaneRssMiB: cpRss,
            controlPlanePssMiB: cpPss,
            machineMiB: machine,
            sharedClusterTreeAtStartMiB: sharedAtStart,
            components,
            idleCores,
          },
          plainControlPlane: { rss: plain.rss, pss: plain.pss, idleCores: plainCores },
          getNamespaces: {
            p50: percentile(tenantLatency, 50),
            p99,
            plainP50: percentile(hostLatency, 50),
            plainP99: hostP99,
          },
          curve,
        },
      };
    }
  },
};
