/**
 * One process for a tenant's API server, controller-manager and scheduler (issue 10, target 1;
 * ADR 12, decision 16): a control plane started directly as upstream's four processes (the
 * baseline: `density`'s plain control plane, `speed`'s floor) against etcd and kube-control-plane,
 * in alternating rounds. Each is first shown to work as a cluster (the controller-manager makes
 * `default`'s service account, the scheduler binds a pod to a Ready node), then left idle; then
 * its processes' RSS, PSS and CPU over the idle window are read. Also the time until all three
 * components serve. Target: ≤ 350 MiB RSS per idle tenant.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { join } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import { ONE_PROCESS_SETTLES_MS } from '../src/runtime/controlPlane.js';
import { ProcessRuntime } from '../src/runtime/processRuntime.js';
import { createLogger } from '../src/worker/logger.js';
import {
  cpuSecondsOfRuntime,
  directControlPlane,
  memoryOfRuntime,
  percentile,
  readyNode,
  say,
  waitFor,
  type ProcessMemory,
} from './common.js';
import { ratio, type BenchContext, type Scenario } from './scenario.js';

const median = (xs: number[]) => percentile(xs, 50);
const RSS_TARGET_MIB = 350;

interface Shape {
  /** Until the API server, controller-manager and scheduler all serve (ms). */
  startMs: number;
  memory: ProcessMemory;
  /** Of one core, over the idle window (%). */
  cpuPercent: number;
}

/** One control plane of a shape: started, shown to work, left idle, measured and removed. */
async function measure(
  env: BenchContext['env'],
  runtime: ProcessRuntime,
  id: string,
  oneProcess: boolean,
  idleSeconds: number,
): Promise<Shape> {
  const plane = await directControlPlane(env, runtime, id, oneProcess);
  const core = plane.kc.makeApiClient(CoreV1Api);
  try {
    const t0 = performance.now();
    await plane.start();
    const startMs = performance.now() - t0;
    await readyNode(core, 'n', { cpu: '4', memory: '8Gi', pods: '110' });
    // The service-account admission refuses a pod until the controller-manager made `default`.
    await waitFor(`${id}: a pod created in default`, () =>
      core
        .createNamespacedPod({
          namespace: 'default',
          body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'pause' }] } },
        })
        .then(() => true as const)
        .catch((e: unknown) => {
          if (/serviceaccount/i.test(String((e as { body?: unknown }).body ?? e))) return undefined;
          throw e;
        }),
    );
    await waitFor(`${id}: the pod bound by the scheduler`, async () =>
      (await core.readNamespacedPod({ namespace: 'default', name: 'p' })).spec?.nodeName === 'n'
        ? true
        : undefined,
    );
    // The one process sets its lean GC target once started: both shapes are measured idle after
    // the same wait.
    const sinceStarted = performance.now() - t0 - startMs;
    await pause(Math.max(0, ONE_PROCESS_SETTLES_MS + 2_000 - sinceStarted));
    const cpu0 = await cpuSecondsOfRuntime(runtime, id);
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const cpuPercent = (((await cpuSecondsOfRuntime(runtime, id)) - cpu0) / idleSeconds) * 100;
    return { startMs, memory: await memoryOfRuntime(runtime, id), cpuPercent };
  } finally {
    await runtime.remove(id);
  }
}

export const oneProcess: Scenario = {
  summary: "a tenant's control plane idle: upstream's 4 processes vs etcd + kube-control-plane (one process)",
  quick: { rounds: 1, idle: 20 },
  full: { rounds: 3, idle: 60 },
  async run({ env }, o) {
    const runtime = new ProcessRuntime({
      root: join(env.root, 'direct'),
      logger: createLogger({ level: 'error' }),
    });
    const four: Shape[] = [];
    const one: Shape[] = [];
    try {
      for (let round = 1; round <= o.rounds!; round++) {
        four.push(await measure(env, runtime, `four-${round}`, false, o.idle!));
        one.push(await measure(env, runtime, `one-${round}`, true, o.idle!));
        say(
          `round ${round}/${o.rounds}: 4 processes ${four.at(-1)!.memory.rss.toFixed(0)} MiB RSS, one process ${one.at(-1)!.memory.rss.toFixed(0)} MiB`,
        );
      }
    } finally {
      await runtime.shutdown();
    }
    const m = (xs: Shape[], f: (s: Shape) => number) => median(xs.map(f));
    const rows: [string, (s: Shape) => number, number][] = [
      ['RSS, all processes (MiB)', (s) => s.memory.rss, 0],
      ['PSS, all processes (MiB)', (s) => s.memory.pss, 0],
      ['CPU idle (% of a core)', (s) => s.cpuPercent, 1],
      ['-> all three serve (ms)', (s) => s.startMs, 0],
    ];
    const rss = m(one, (s) => s.memory.rss);
    const byComponent = (xs: Shape[]) =>
      Object.fromEntries(
        Object.keys(xs[0]!.memory.components).map((c) => [c, m(xs, (s) => s.memory.components[c] ?? 0)]),
      );
    return {
      lines: [
        `oneprocess, median of ${o.rounds} (idle ${o.idle} s)   4 processes   one process   ratio`,
        ...rows.map(
          ([label, f, digits]) =>
            `  ${label.padEnd(32)} ${m(four, f).toFixed(digits).padStart(11)}   ${m(one, f).toFixed(digits).padStart(11)}   ${ratio(m(one, f), m(four, f))}`,
        ),
        `  by component, 4 processes: ${Object.entries(byComponent(four))
          .map(([c, v]) => `${c} ${v.toFixed(0)}`)
          .join(', ')}`,
        `  by component, one process: ${Object.entries(byComponent(one))
          .map(([c, v]) => `${c} ${v.toFixed(0)}`)
          .join(', ')}`,
        `  target: <= ${RSS_TARGET_MIB} MiB RSS for the control plane (clusterTree's share comes on top): ${rss <= RSS_TARGET_MIB ? 'met' : 'not met'}`,
      ],
      json: {
        rounds: o.rounds,
        idleSeconds: o.idle,
        fourProcesses: four,
        oneProcess: one,
        median: {
          fourRssMiB: m(four, (s) => s.memory.rss),
          oneRssMiB: rss,
          fourStartMs: m(four, (s) => s.startMs),
          oneStartMs: m(one, (s) => s.startMs),
        },
      },
    };
  },
};
