/**
 * Speed (issue 10, target 3). Rounds alternate so drift hits both alike:
 *   floor:   etcd + kube-apiserver + kube-controller-manager + kube-scheduler started directly
 *            through the process runtime, one after the other, certificates made beforehand
 *            (with one process, the default, etcd and kube-control-plane, as the product then
 *            starts them); then one Node registered and reported Ready (what a kubelet's first
 *            status does). The target's floor, as measured since issue 10 began. Beside it, not
 *            for the target, the same with etcd and the API server started at once (as the
 *            product does since ADR 12 decision 22): what that overlap gives components started
 *            directly;
 *   product: a VirtualCluster promoting one kwok node, created (what `kubectl apply` does)
 *            until Initialized (the control plane serves) and until Ready (the node Ready in it).
 * Prints medians and ratios, and where the product's time goes (each activity of the last
 * round's workflow, from its history).
 */
import { CoreV1Api, Watch } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type VirtualCluster } from '../src/api/virtualCluster.js';
import { join } from 'node:path';
import { ProcessRuntime } from '../src/runtime/processRuntime.js';
import { createLogger } from '../src/worker/logger.js';
import { workflowIdFor } from '../src/workflows/definitions.js';
import {
  activityTimes,
  countsBetween,
  cpuBetween,
  cpuSnapshot,
  hostRequests,
  createKwokNodes,
  createVC,
  deleteVC,
  directControlPlane,
  percentile,
  readyNode,
  say,
  stepDurations,
  temporalShare,
  workflowStartedAt,
  writePlot,
} from './common.js';
import { ratio, type BenchContext, type Scenario } from './scenario.js';

const median = (xs: number[]) => percentile(xs, 50);

/**
 * The floor: etcd, kube-apiserver, kube-controller-manager and kube-scheduler started directly
 * (certificates made beforehand), then one Node registered and reported Ready. `oneProcess`: the
 * last three as one process of kube-control-plane, as the product then starts them.
 */
export async function floorRound(
  env: BenchContext['env'],
  direct: ProcessRuntime,
  round: number,
  oneProcess: boolean,
  together = false,
): Promise<{ initMs: number; readyMs: number; cpu: ReturnType<typeof cpuBetween> }> {
  const plane = await directControlPlane(
    env,
    direct,
    `direct-${together ? 'together-' : ''}${round}`,
    oneProcess,
  );
  const core = plane.kc.makeApiClient(CoreV1Api);
  const before = await cpuSnapshot();
  const t0 = performance.now();
  await plane.start({ together });
  const initMs = performance.now() - t0;
  await readyNode(core, 'n');
  const readyMs = performance.now() - t0;
  const cpu = cpuBetween(before, await cpuSnapshot());
  await direct.remove(plane.layout.id);
  return { initMs, readyMs, cpu };
}

/** Every round's time to Initialized and to Ready, the floor's beside the product's, as an SVG. */
export function writeTimesPlot(
  out: string,
  name: string,
  title: string,
  t: {
    who: string;
    floorInit: number[];
    floorReady: number[];
    init: number[];
    ready: number[];
    /** The floor with etcd and the API server started at once. */
    togetherInit?: number[];
    togetherReady?: number[];
  },
): Promise<string> {
  const points = (to: string, who: string, xs: number[]) => xs.map((ms) => ({ to, who, s: ms / 1000 }));
  const together = 'floor, etcd and API server at once';
  return writePlot(out, name, {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 360,
    height: 220,
    data: {
      values: [
        ...points('Initialized', 'floor (direct)', t.floorInit),
        ...points('Initialized', t.who, t.init),
        ...points('Ready (one node)', 'floor (direct)', t.floorReady),
        ...points('Ready (one node)', t.who, t.ready),
        ...points('Initialized', together, t.togetherInit ?? []),
        ...points('Ready (one node)', together, t.togetherReady ?? []),
      ],
    },
    mark: { type: 'point', filled: true, size: 60 },
    encoding: {
      x: { field: 'to', type: 'nominal', title: null },
      xOffset: { field: 'who' },
      y: { field: 's', type: 'quantitative', title: 'seconds' },
      color: { field: 'who', type: 'nominal', title: null },
    },
  });
}

/** The product: a VirtualCluster promoting one kwok node, created until Initialized and until Ready. */
export async function productRound(
  host: BenchContext['env']['operator']['host'],
  name: string,
): Promise<{
  initMs: number;
  readyMs: number;
  uid: string;
  createdAt: number;
  cpu: ReturnType<typeof cpuBetween>;
  /** The host API server's requests from the create to Ready, by verb and resource. */
  requests: Map<string, number>;
}> {
  await createKwokNodes(host.core, [name], 110);
  let uid = '';
  let initMs: number | undefined;
  let readyMs: number | undefined;
  let t1 = 0;
  // A watch, as `kubectl wait` does: polling the status every few milliseconds would load the
  // host's API server (and this process) while the tenant starts on the same two cores.
  let settle!: (error?: Error) => void;
  let over = false;
  const settled = new Promise<void>((resolve, reject) => {
    settle = (error) => {
      over = true;
      if (error) reject(error);
      else resolve();
    };
  });
  // Awaited below; a failure before that (the create's) is the one reported.
  settled.catch(() => undefined);
  const seen = (vc: VirtualCluster) => {
    const phase = vc.status?.phase;
    if (phase === 'Failed') settle(new Error(`${name} failed: ${vc.status?.message}`));
    if ((phase === 'Initialized' || phase === 'Ready') && initMs === undefined)
      initMs = performance.now() - t1;
    uid = vc.metadata.uid ?? '';
    if (phase === 'Ready' && readyMs === undefined) {
      readyMs = performance.now() - t1;
      settle();
    }
  };
  let watch: AbortController | undefined;
  // client-node's watch ends after 30 s without an event: opened again (it lists the object as
  // it is first) until the round is over.
  const open = async (): Promise<void> => {
    if (over) return;
    watch = await new Watch(host.kubeConfig)
      .watch(
        `/apis/${GROUP}/${VERSION}/namespaces/default/${PLURAL}`,
        { fieldSelector: `metadata.name=${name}` },
        (_type: string, vc: VirtualCluster) => seen(vc),
        () => void setTimeout(() => void open(), 100),
      )
      .catch(() => {
        setTimeout(() => void open(), 500);
        return undefined;
      });
    if (over) watch?.abort();
  };
  const timeout = setTimeout(() => settle(new Error(`${name} not Ready within 180 s`)), 180_000);
  let asked: Map<string, number> | undefined;
  let before: Awaited<ReturnType<typeof cpuSnapshot>> | undefined;
  let createdAt = 0;
  try {
    await open();
    asked = await hostRequests(host.kubeConfig);
    before = await cpuSnapshot();
    createdAt = Date.now();
    t1 = performance.now();
    await createVC(host, name, { promoteResources: { nodes: [name] } });
    await settled;
  } finally {
    over = true;
    clearTimeout(timeout);
    watch?.abort();
  }
  const cpu = cpuBetween(before, await cpuSnapshot());
  const requests = countsBetween(asked, await hostRequests(host.kubeConfig));
  readyMs ??= performance.now() - t1;
  return { initMs: initMs ?? readyMs, readyMs, uid, createdAt, cpu, requests };
}

export const speed: Scenario = {
  summary: 'apply -> Initialized and -> Ready (one node) vs the same components started directly',
  quick: { rounds: 3 },
  full: { rounds: 7 },
  async run({ env, out, oneProcess }, o) {
    const { root, operator } = env;
    const host = operator.host;
    const direct = new ProcessRuntime({
      root: join(root, 'direct'),
      logger: createLogger({ level: 'error' }),
    });
    const floorInit: number[] = [];
    const floorReady: number[] = [];
    const togetherInit: number[] = [];
    const togetherReady: number[] = [];
    const init: number[] = [];
    const ready: number[] = [];
    // CPU-seconds by process, summed over the rounds, and the machine's busy share of each run.
    const cpu = { floor: new Map<string, number>(), product: new Map<string, number>() };
    const busy = { floor: [] as number[], product: [] as number[] };
    const requests = new Map<string, number>();
    const add = (into: Map<string, number>, from: Map<string, number>) => {
      for (const [k, v] of from) into.set(k, (into.get(k) ?? 0) + v);
    };
    let steps: Record<string, number> = {};
    let share: ReturnType<typeof temporalShare> | undefined;
    let edges: { toWorkflowMs: number; toFirstStepMs: number; publishedToInitializedMs: number } | undefined;
    try {
      for (let round = 1; round <= o.rounds!; round++) {
        // The two floors take turns at going first, so that drift within a round hits both alike.
        const plainFirst = round % 2 === 1;
        const both = plainFirst ? undefined : await floorRound(env, direct, round, oneProcess, true);
        const floor = await floorRound(env, direct, round, oneProcess);
        const together = both ?? (await floorRound(env, direct, round, oneProcess, true));
        add(cpu.floor, floor.cpu.byName);
        busy.floor.push(floor.cpu.busy);
        floorInit.push(floor.initMs);
        floorReady.push(floor.readyMs);
        togetherInit.push(together.initMs);
        togetherReady.push(together.readyMs);

        const name = `speed-${round}`;
        const product = await productRound(host, name);
        add(cpu.product, product.cpu.byName);
        add(requests, product.requests);
        busy.product.push(product.cpu.busy);
        init.push(product.initMs);
        ready.push(product.readyMs);
        const uid = product.uid;
        if (round === o.rounds) {
          const id = workflowIdFor({ namespace: 'default', name, uid });
          const times = await activityTimes(operator.client, id);
          steps = stepDurations(times);
          share = temporalShare(times);
          const path = times.filter((d) => d.type !== 'reportStatus');
          const published = times.find((d) => d.type === 'publishKubeconfig');
          const first = Math.min(...path.map((d) => d.scheduled));
          edges = {
            toWorkflowMs: (await workflowStartedAt(operator.client, id)) - product.createdAt,
            toFirstStepMs: first - product.createdAt,
            publishedToInitializedMs: published
              ? product.createdAt + product.initMs - published.completed
              : NaN,
          };
        }
        await deleteVC(host, name);
        say(
          `round ${round}/${o.rounds}: floor ${floorInit.at(-1)!.toFixed(0)} / ${floorReady.at(-1)!.toFixed(0)} ms, VirtualCluster ${init.at(-1)!.toFixed(0)} / ${ready.at(-1)!.toFixed(0)} ms`,
        );
      }
    } finally {
      await direct.shutdown();
    }
    const [fi, fr, pi, pr] = [median(floorInit), median(floorReady), median(init), median(ready)];
    const [ti, tr] = [median(togetherInit), median(togetherReady)];
    const names = [...new Set([...cpu.floor.keys(), ...cpu.product.keys()])].sort(
      (a, b) => (cpu.product.get(b) ?? 0) - (cpu.product.get(a) ?? 0),
    );
    const shown = names.slice(0, 10);
    const mean = (m: Map<string, number>, keys: string[]) =>
      keys.reduce((sum, k) => sum + (m.get(k) ?? 0), 0) / o.rounds!;
    const cpuLine = (label: string, f: number, p: number) =>
      `  ${label.padEnd(34)} ${f.toFixed(2).padStart(6)}   ${p.toFixed(2).padStart(14)}`;
    const cpuLines = [
      `CPU from the start to Ready, mean of ${o.rounds} rounds (CPU-seconds; a process that ended`,
      'meanwhile is not counted; "(new)": started in the run)  floor   VirtualCluster',
      ...shown.map((n) => cpuLine(n, mean(cpu.floor, [n]), mean(cpu.product, [n]))),
      cpuLine('the rest', mean(cpu.floor, names.slice(10)), mean(cpu.product, names.slice(10))),
      cpuLine('all', mean(cpu.floor, names), mean(cpu.product, names)),
      `  the machine busy (median)          ${(100 * median(busy.floor)).toFixed(0).padStart(5)} %   ${(100 * median(busy.product)).toFixed(0).padStart(12)} %`,
    ];
    const plot = await writeTimesPlot(
      out,
      'speed',
      `Time to Initialized and to Ready, each of ${o.rounds} rounds (s)`,
      {
        who: 'VirtualCluster',
        floorInit,
        floorReady,
        init,
        ready,
        togetherInit,
        togetherReady,
      },
    );
    return {
      lines: [
        `speed, median of ${o.rounds} (ms)              floor   VirtualCluster   ratio   target`,
        ...(oneProcess
          ? ['  (KOSMOS_VC_ONE_PROCESS: the floor and the product run kube-control-plane beside etcd)']
          : []),
        `  -> Initialized (control plane serves)  ${fi.toFixed(0).padStart(6)}   ${pi.toFixed(0).padStart(14)}   ${ratio(pi, fi).padStart(5)}   ≤ 1.1×: ${pi <= 1.1 * fi ? 'met' : 'missed'}`,
        `  -> Ready (one node Ready)              ${fr.toFixed(0).padStart(6)}   ${pr.toFixed(0).padStart(14)}   ${ratio(pr, fr).padStart(5)}   ≤ 1.3×: ${pr <= 1.3 * fr ? 'met' : 'missed'}`,
        `  the floor with etcd and the API server started at once (not the target's floor, shown beside it):`,
        `    -> Initialized ${ti.toFixed(0)} ms (the product ${ratio(pi, ti)}), -> Ready ${tr.toFixed(0)} ms (${ratio(pr, tr)})`,
        '',
        'where the last round went (activity durations from its workflow history, ms; reportStatus',
        'runs beside the steps, its sum is not on the path)',
        ...Object.entries(steps)
          .sort((a, b) => b[1] - a[1])
          .map(([step, ms]) => `  ${step.padEnd(28)} ${ms.toFixed(0).padStart(6)}`),
        ...(edges
          ? [
              `around the steps: create -> workflow started ${edges.toWorkflowMs.toFixed(0)} ms, -> first step scheduled ${edges.toFirstStepMs.toFixed(0)} ms; kubeconfig published -> Initialized seen ${edges.publishedToInitializedMs.toFixed(0)} ms`,
            ]
          : []),
        ...(share
          ? [
              `Temporal's own share, the ${share.steps} steps: ${share.betweenStepsMs.toFixed(0)} ms from a step's end to the next one's scheduling (not in the durations above), ${share.scheduledToStartMs.toFixed(0)} ms from scheduling to a worker's start (in them)${share.retried ? '; a step was retried: its backoff counts there' : ''}`,
            ]
          : []),
        ...cpuLines,
        `the host API server's requests from the create to Ready, mean of ${o.rounds} rounds (all of`,
        "them: the product's, leases, kwok, relists, this benchmark's; a watch counts once closed):",
        ...[...requests]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 14)
          .map(([k, n]) => `  ${k.padEnd(40)} ${(n / o.rounds!).toFixed(1).padStart(6)}`),
        `  all                                      ${([...requests.values()].reduce((a, b) => a + b, 0) / o.rounds!).toFixed(1).padStart(6)}`,
        `  plot: ${plot}`,
      ],
      json: {
        floorShape: oneProcess ? 'one process' : 'four processes',
        floorInitMs: floorInit,
        floorReadyMs: floorReady,
        floorTogetherInitMs: togetherInit,
        floorTogetherReadyMs: togetherReady,
        initMs: init,
        readyMs: ready,
        steps,
        temporalShare: share,
        aroundSteps: edges,
        cpuSecondsPerRound: {
          floor: Object.fromEntries(names.map((n) => [n, mean(cpu.floor, [n])])),
          product: Object.fromEntries(names.map((n) => [n, mean(cpu.product, [n])])),
        },
        busy,
        hostRequestsPerRound: Object.fromEntries([...requests].map(([k, n]) => [k, n / o.rounds!])),
      },
    };
  },
};
