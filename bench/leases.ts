/**
 * Node heartbeats (issue 10, target 6): what a tenant node's Lease renewal costs its control
 * plane. One control plane started directly (etcd, kube-apiserver, ...), two sets of --nodes
 * Leases in kube-node-lease, each renewed --rounds times, in alternating passes, one form each
 * (a set of its own: the other's writes would make every update a conflict):
 *   baseline: a merge patch of spec.renewTime (what clusterTree did before 2026-12-05);
 *   figure:   clusterTree's own renewal (NodeSync.renewLeases: an update of the Lease its last
 *             write returned, as a kubelet's), with clusterTree's concurrency.
 * Prints the control plane's CPU (all its processes: etcd, the API server, the controller-manager
 * and scheduler, whose informers get the writes) per 1,000 renewals of each, and their ratio.
 * Fair to both: a first pass of each is not counted, the order alternates from round to round
 * (patch, update; update, patch), each pass's window runs a second past its end (the writes'
 * trailing work: watch events, etcd's batched commits) and the idle plane's own CPU over the
 * window, measured first, is taken off; a pass of clusterTree's that did anything but one update
 * per Lease ends the run.
 */
import { CoordinationV1Api, CoreV1Api, type V1Node } from '@kubernetes/client-node';
import { join } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import { merge } from '../src/api/kubeClient.js';
import { ClusterTreeConfig } from '../src/clustertree/config.js';
import { microTime } from '../src/clustertree/events.js';
import { NodeSync } from '../src/clustertree/nodeSync.js';
import { forEachLimited } from '../src/clustertree/queue.js';
import { ONE_PROCESS_SETTLES_MS } from '../src/runtime/controlPlane.js';
import { ProcessRuntime } from '../src/runtime/processRuntime.js';
import { createLogger } from '../src/worker/logger.js';
import { cpuSecondsOfRuntime, directControlPlane, percentile, say } from './common.js';
import { ratio, type Scenario } from './scenario.js';

const NAMESPACE = 'kube-node-lease';
const median = (xs: number[]) => percentile(xs, 50);

export const leases: Scenario = {
  summary: "a tenant node's Lease renewal: clusterTree's update vs a merge patch, control-plane CPU",
  quick: { nodes: 1000, rounds: 3 },
  full: { nodes: 5000, rounds: 5 },
  async run({ env, oneProcess }, o) {
    const logger = createLogger({ level: 'error' });
    const direct = new ProcessRuntime({ root: join(env.root, 'direct'), logger });
    try {
      const plane = await directControlPlane(env, direct, 'leases', oneProcess);
      await plane.start();
      // The one process sets its lean GC target a while after it started: measured after that.
      if (oneProcess) await pause(ONE_PROCESS_SETTLES_MS + 2_000);
      const coordination = plane.kc.makeApiClient(CoordinationV1Api);
      const core = plane.kc.makeApiClient(CoreV1Api);
      const set = (form: string) => Array.from({ length: o.nodes! }, (_, i) => `${form}-${i}`);
      const [patched, updated] = [set('patched'), set('updated')];
      const nodes = new Map<string, V1Node>(updated.map((name) => [name, { metadata: { name } }]));
      const cfg = ClusterTreeConfig.parse({
        tenant: { namespace: 'bench', name: 'leases', uid: 'leases' },
        hostNamespace: 'bench',
        tenantKubeconfig: '-',
        listen: { address: '127.0.0.1', port: 1 },
        virtualNodeName: 'bench-resources',
        quotaName: 'promoted',
      });
      const known = <T>(m: Map<string, T>) =>
        ({ get: (name: string) => m.get(name), list: () => [...m.values()] }) as never;
      // What clusterTree's renewals call, counted: each measured pass must be its updates alone.
      const calls = new Map<string, number>();
      const counted = new Proxy(coordination, {
        get(target, key, receiver) {
          const value: unknown = Reflect.get(target, key, receiver);
          if (typeof value !== 'function' || typeof key !== 'string') return value;
          return (...args: unknown[]): unknown => {
            calls.set(key, (calls.get(key) ?? 0) + 1);
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
      const sync = new NodeSync({
        cfg,
        tenantCore: core,
        tenantLeases: counted,
        hostNodes: known(new Map()),
        hostQuotas: known(new Map()),
        tenantNodes: known(nodes),
        log: logger,
      });
      // clusterTree's first pass makes its set (and keeps what it wrote for the updates that follow).
      await sync.renewLeases();
      await forEachLimited(patched, cfg.concurrency, (name) =>
        coordination.createNamespacedLease({
          namespace: NAMESPACE,
          body: {
            metadata: { name },
            spec: {
              holderIdentity: name,
              leaseDurationSeconds: 40,
              renewTime: microTime(new Date()) as never,
            },
          },
        }),
      );
      const patchAll = () =>
        forEachLimited(patched, cfg.concurrency, (name) =>
          coordination.patchNamespacedLease(
            { name, namespace: NAMESPACE, body: { spec: { renewTime: microTime(new Date()) } } },
            merge,
          ),
        );
      const owner = plane.layout.id;
      const pass = async (form: 'patch' | 'update') => {
        calls.clear();
        await (form === 'patch' ? patchAll() : sync.renewLeases());
        const made = Object.fromEntries(calls);
        if (form === 'update' && (calls.size !== 1 || calls.get('replaceNamespacedLease') !== o.nodes))
          throw new Error(`clusterTree's pass was not ${o.nodes} updates: ${JSON.stringify(made)}`);
      };
      // Unmeasured: a pass of each, then the idle plane's own CPU rate over 5 s.
      await pass('patch');
      await pass('update');
      await pause(2_000);
      const idle0 = await cpuSecondsOfRuntime(direct, owner);
      await pause(5_000);
      const idleRate = ((await cpuSecondsOfRuntime(direct, owner)) - idle0) / 5;
      const perThousand = { patch: [] as number[], update: [] as number[] };
      const seconds = { patch: [] as number[], update: [] as number[] };
      for (let round = 1; round <= o.rounds!; round++)
        for (const form of round % 2 ? (['patch', 'update'] as const) : (['update', 'patch'] as const)) {
          const cpu0 = await cpuSecondsOfRuntime(direct, owner);
          const t0 = performance.now();
          await pass(form);
          const took = (performance.now() - t0) / 1000;
          await pause(1_000);
          const window = (performance.now() - t0) / 1000;
          const cpu = (await cpuSecondsOfRuntime(direct, owner)) - cpu0 - idleRate * window;
          perThousand[form].push((cpu / o.nodes!) * 1000);
          seconds[form].push(took);
          say(`round ${round}/${o.rounds} ${form}: ${cpu.toFixed(2)} CPU-s, ${took.toFixed(2)} s`);
        }
      const [p, u] = [median(perThousand.patch), median(perThousand.update)];
      const [ps, us] = [median(seconds.patch), median(seconds.update)];
      return {
        lines: [
          `leases: ${o.nodes} Leases renewed, median of ${o.rounds} passes each     merge patch   update   ratio`,
          `  control-plane CPU per 1,000 renewals (CPU-s)         ${p.toFixed(3).padStart(11)}   ${u.toFixed(3).padStart(6)}   ${ratio(u, p).padStart(5)}`,
          `  a pass over all of them (s)                          ${ps.toFixed(2).padStart(11)}   ${us.toFixed(2).padStart(6)}   ${ratio(us, ps).padStart(5)}`,
          `  at a renewal every 10 s, 5,000 nodes cost the control plane ${((p * 5) / 10).toFixed(2)} cores patched, ${((u * 5) / 10).toFixed(2)} updated`,
          `  (the idle plane's own ${(idleRate * 100).toFixed(1)} % of a core taken off)`,
        ],
        json: {
          nodes: o.nodes,
          rounds: o.rounds,
          shape: oneProcess ? 'one process' : 'four processes',
          idleCores: idleRate,
          cpuPerThousand: perThousand,
          passSeconds: seconds,
        },
      };
    } finally {
      await direct.shutdown();
    }
  },
};
