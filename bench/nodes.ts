/**
 * Nodes (issue 10, target 6): --nodes kwok nodes promoted into one tenant.
 * Baseline, same run: the same nodes created on the host until kwok has made all of them Ready.
 * Figure: apply -> Ready with every promoted node Ready in the tenant; then, over --steady
 * seconds (at least 300: five Lease renewals), the CPU the nodes' heartbeats cost
 * the tenant (clusterTree, apiserver, etcd, ...)
 * next to what the same nodes cost the host (kwok, apiserver, etcd, ...: the host's CPU with the
 * nodes Ready less its CPU before they were made, each over --steady seconds).
 */
import { CoreV1Api, type V1Node } from '@kubernetes/client-node';
import {
  cpuSecondsOfRuntime,
  cpuTicks,
  createKwokNodes,
  createVC,
  readyVC,
  say,
  tenantCpuSeconds,
  tenantKc,
  waitFor,
} from './common.js';
import { setTimeout as pause } from 'node:timers/promises';
import { ONE_PROCESS_SETTLES_MS } from '../src/runtime/controlPlane.js';
import { ratio, type Scenario } from './scenario.js';

const ready = (n: V1Node) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

async function countReady(core: CoreV1Api, prefix = ''): Promise<number> {
  let count = 0;
  let _continue: string | undefined;
  do {
    const page = await core.listNode({ limit: 2000, ...(_continue ? { _continue } : {}) });
    count += page.items.filter((n) => n.metadata?.name?.startsWith(prefix) && ready(n)).length;
    _continue = page.metadata?._continue;
  } while (_continue);
  return count;
}

export const nodes: Scenario = {
  summary: 'many kwok nodes promoted into one tenant: apply -> all Ready, heartbeat CPU',
  // The host's windows at least one of its renewal intervals, the full two; the tenant's is at
  // least 5 minutes (below), which holds five of its Lease renewals (60 s, ADR 12 decision 19).
  quick: { nodes: 300, steady: 60 },
  // The issue asks for 10,000; the CRD takes at most 5,000 names (ADR 12).
  full: { nodes: 5000, steady: 120 },
  async run({ env, oneProcess }, o) {
    const host = env.operator.host;
    const names = Array.from({ length: o.nodes! }, (_, i) => `nd-${i}`);
    const hostCpu = () => cpuSecondsOfRuntime(env.embeddedRuntime, 'host');
    const steady = () => new Promise((r) => setTimeout(r, o.steady! * 1000));
    say(`the host without the nodes for ${o.steady} s (after 10 s to settle)...`);
    await new Promise((r) => setTimeout(r, 10_000));
    const i0 = await hostCpu();
    await steady();
    const hostIdleCores = ((await hostCpu()) - i0) / o.steady!;
    say(`creating ${names.length} kwok nodes on the host...`);
    const h0 = performance.now();
    await createKwokNodes(host.core, names, 110);
    // Counted once a second: listing thousands of nodes is work for this process and the API server.
    await waitFor(
      'every host node Ready',
      async () => ((await countReady(host.core, 'nd-')) === names.length ? true : undefined),
      900_000,
      1000,
    );
    const hostMs = performance.now() - h0;
    say(`the host with the nodes Ready for ${o.steady} s...`);
    const n0 = await hostCpu();
    await steady();
    const hostNodeCores = ((await hostCpu()) - n0) / o.steady! - hostIdleCores;

    say(`promoting ${names.length} nodes into one tenant...`);
    const t0 = performance.now();
    await createVC(host, 'nodes', { promoteResources: { nodes: names } });
    const vc = await readyVC(host, 'nodes');
    const readyAt = performance.now();
    const tenant = tenantKc(vc).makeApiClient(CoreV1Api);
    await waitFor(
      'every tenant node Ready',
      async () => ((await countReady(tenant)) >= names.length ? true : undefined),
      900_000,
      1000,
    );
    const promoteMs = performance.now() - t0;
    // A one process sets its lean GC target a while after its start: the steady window after that.
    if (oneProcess) await pause(Math.max(0, ONE_PROCESS_SETTLES_MS + 2_000 - (performance.now() - readyAt)));

    const kwok = (await env.embeddedRuntime.list('host')).find((s) => s.name === 'kwok')?.pid;
    if (!kwok) throw new Error('kwok is not running');
    // At least 5 minutes, whatever --steady says: the figures before ADR 12 decision 20 were
    // taken over windows that held one pass of a kubelet's status written again unchanged (every
    // 5 minutes), which the tenant no longer makes; the same window keeps them comparable.
    const tenantS = Math.max(o.steady!, 300);
    say(`steady state for ${tenantS} s...`);
    // Every process of the tenant: clusterTree renews the Leases, the tenant's
    // apiserver and etcd take the writes. kwok does the same for these nodes on the host.
    const [c0, k0, h0busy] = [
      await tenantCpuSeconds(env.operator, [vc]),
      await cpuTicks(kwok),
      await hostCpu(),
    ];
    await pause(tenantS * 1000);
    // The host's CPU in the same window: what the tenant's figure had to share the machine with.
    const hostDuringCores = ((await hostCpu()) - h0busy) / tenantS;
    const c1 = await tenantCpuSeconds(env.operator, [vc]);
    const byComponent = Object.fromEntries(
      Object.entries(c1).map(([c, v]) => [c, (v - (c0[c] ?? v)) / tenantS]),
    );
    const treeCores = byComponent.clustertree ?? 0;
    const tenantCores = Object.values(byComponent).reduce((a, b) => a + b, 0);
    const kwokCores = ((await cpuTicks(kwok)) - k0) / 100 / tenantS;
    return {
      lines: [
        `nodes: ${names.length} kwok nodes`,
        `  baseline, on the host: create -> all Ready ${(hostMs / 1000).toFixed(1)} s`,
        `  promoted into a tenant: apply -> Ready with all Ready ${(promoteMs / 1000).toFixed(1)} s (${ratio(promoteMs, hostMs)}); target ≤ 60 s: ${promoteMs <= 60_000 ? 'met' : 'missed'}`,
        `  heartbeats over ${tenantS} s, in cores: the whole tenant ${tenantCores.toFixed(2)} (${Object.entries(
          byComponent,
        )
          .map(([c, v]) => `${c} ${v.toFixed(2)}`)
          .join(
            ', ',
          )}); the same nodes on the host ${hostNodeCores.toFixed(2)} (${ratio(tenantCores, hostNodeCores)}), of which kwok ${kwokCores.toFixed(2)} (clusterTree ${ratio(treeCores, kwokCores)}); the host in the tenant's window ${hostDuringCores.toFixed(2)}; target < 0.5: ${tenantCores < 0.5 ? 'met' : `missed (clusterTree alone ${treeCores < 0.5 ? 'meets it' : 'misses it too'})`}`,
      ],
      json: {
        hostReadyMs: hostMs,
        promoteMs,
        tenantCores,
        byComponent,
        clusterTreeCores: treeCores,
        kwokCores,
        hostIdleCores,
        hostNodeCores,
        hostDuringCores,
        tenantWindowS: tenantS,
      },
    };
  },
};
