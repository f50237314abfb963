/**
 * The operator at scale (issue 10, target 7). --vcs VirtualClusters are provisioned (in waves
 * of --wave) and put to sleep: an idle tenant costs the operator the same whether its processes
 * run or not (one blocked workflow, one watched object), and a hundred running control planes do
 * not fit this machine. The worker and watcher run in this process: its RSS is the figure,
 * with 0 VirtualClusters the baseline. Then one tenant's lifecycle: the history events of its
 * workflow for create (-> Ready), a resize (a second node) and delete.
 */
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Client } from '@temporalio/client';
import { memoryMiB, createKwokNodes, createVC, historyLength, readyVC, say, waitFor } from './common.js';
import { GROUP, PLURAL, VERSION } from '../src/api/virtualCluster.js';
import { workflowIdFor } from '../src/workflows/definitions.js';
import { ratio, type Scenario } from './scenario.js';

const TARGET_MIB = 200;

/** The history's length once it has stopped growing (a status write may still be recorded). */
async function settledLength(client: Client, workflowId: string): Promise<number> {
  let last = -1;
  for (;;) {
    const n = await historyLength(client, workflowId);
    if (n === last) return n;
    last = n;
    await new Promise((r) => setTimeout(r, 1500));
  }
}

async function settledRss(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  await new Promise((r) => setTimeout(r, 2000));
  gc?.();
  return (await memoryMiB(process.pid)).rss;
}

export const operatorScale: Scenario = {
  summary: 'operator (worker + watcher) RSS with many idle VirtualClusters; history events per lifecycle',
  quick: { vcs: 10, wave: 5 },
  full: { vcs: 100, wave: 10 },
  async run({ env }, o) {
    const host = env.operator.host;
    const { client } = env.operator;

    // One tenant's lifecycle first, while nothing else runs.
    await createKwokNodes(host.core, ['life-0', 'life-1'], 110);
    const ref = { namespace: 'default', name: 'life' };
    await createVC(host, 'life', { promoteResources: { nodes: ['life-0'] } });
    const vc = await readyVC(host, 'life');
    const wid = workflowIdFor({ ...ref, uid: vc.metadata.uid });
    const created = await settledLength(client, wid);
    await host.custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        ...ref,
        body: { spec: { promoteResources: { nodes: ['life-0', 'life-1'] } } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await waitFor('life resized', async () => {
      const v = await host.getVirtualCluster(ref);
      return v?.status?.phase === 'Ready' && v.status.promoted?.nodeCount === 2 ? true : undefined;
    });
    const resized = await settledLength(client, wid);
    await host.custom.deleteNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      ...ref,
    });
    await client.workflow.getHandle(wid).result();
    const deleted = await historyLength(client, wid);

    const baseline = await settledRss();
    say(`operator with 0 VirtualClusters: ${baseline.toFixed(0)} MiB`);
    const names = Array.from({ length: o.vcs! }, (_, i) => `op-${i}`);
    // This process's CPU while the operator provisions them and puts them to sleep: mostly the
    // operator's (what its V8 flags cost), with the benchmark's own polling of their status.
    const cpuBefore = process.cpuUsage();
    for (let i = 0; i < names.length; i += o.wave!) {
      const wave = names.slice(i, i + o.wave!);
      await Promise.all(wave.map((name) => createVC(host, name, { sleep: true })));
      // Every 2 s, not every 200 ms: the polling's CPU counts in this process's figure.
      await waitFor(
        `${wave.join(', ')} asleep`,
        async () => {
          const all = await Promise.all(
            wave.map((name) => host.getVirtualCluster({ namespace: 'default', name })),
          );
          if (all.some((v) => v?.status?.phase === 'Failed')) throw new Error('a VirtualCluster failed');
          return all.every((v) => v?.status?.phase === 'Sleeping') ? true : undefined;
        },
        900_000,
        2_000,
      );
      say(
        `${i + wave.length} VirtualClusters asleep, operator ${(await memoryMiB(process.pid)).rss.toFixed(0)} MiB`,
      );
    }
    const cpu = process.cpuUsage(cpuBefore);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const figure = await settledRss();
    return {
      lines: [
        `operator (worker + watcher, in this process) RSS (MiB)`,
        `  baseline, 0 VirtualClusters: ${baseline.toFixed(0)}`,
        `  with ${names.length} idle VirtualClusters: ${figure.toFixed(0)} (${ratio(figure, baseline)}); target ≤ ${TARGET_MIB}: ${figure <= TARGET_MIB ? 'met' : 'missed'}`,
        `  this process's CPU while they were provisioned and put to sleep (the operator's and this benchmark's polling): ${cpuSeconds.toFixed(1)} s (${((cpuSeconds / names.length) * 1000).toFixed(0)} ms a VirtualCluster)`,
        '',
        'Temporal history events of one tenant',
        `  create -> Ready ${created}, resize (one more node) ${resized - created}, delete ${deleted - resized}; whole lifecycle ${deleted}`,
      ],
      json: {
        baselineMiB: baseline,
        figureMiB: figure,
        cpuSeconds,
        history: { create: created, resize: resized - created, delete: deleted - resized },
      },
    };
  },
};
