/**
 * Fair sync (issue 10, target 5). On promoted kwok nodes, in one run:
 *   1. --pods pods in each of --tenants namespaces created directly on the host, all at once
 *      (baseline), then the same in --tenants tenants through clusterTree: per-pod create ->
 *      Running, p50/p99, ratio of the p99s.
 *   2. A quiet tenant's --quiet pods alone (baseline), then again while a noisy tenant creates
 *      --noisy pods: how much the quiet tenant's p99 rises; then alone once more, so drift shows.
 *      Each of the three starts once the machine is quiet (the previous one's work done), and
 *      each is traced stage by stage, to tell where a rise comes from.
 *   `--pods 0` leaves part 1 out; `--settle` is the longest wait for a quiet machine (seconds).
 */
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { hostNamespace } from '../src/clustertree/naming.js';
import { PodAnnotation } from '../src/clustertree/translate.js';
import {
  createKwokNodes,
  createVC,
  percentile,
  podRun,
  readyVC,
  say,
  tenantKc,
  waitFor,
  writePlot,
} from './common.js';
import { ratio, type Scenario } from './scenario.js';

const PODS_PER_NODE = 200;
/** kwok runs any image: nothing is pulled. */
const KWOK_POD = { containers: [{ name: 'c', image: 'bench' }] };
const CONCURRENCY = 32;

async function namespace(kc: KubeConfig, name: string): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name } } });
  await waitFor(`the default service account in ${name}`, () =>
    core.readNamespacedServiceAccount({ name: 'default', namespace: name }).catch(() => undefined),
  );
}

const nodesFor = (prefix: string, pods: number) =>
  Array.from({ length: Math.max(1, Math.ceil(pods / PODS_PER_NODE)) }, (_, i) => `${prefix}-${i}`);

/**
 * Busy and total jiffies of the whole machine, from /proc/stat's first line: its first eight
 * fields (guest time is counted in user time already); idle, iowait and steal (time the
 * hypervisor gave another machine) are not busy.
 */
async function machineJiffies(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map((f) => Number(f) || 0) as [number, number, number, number, number, number, number, number];
  return {
    busy: user + nice + system + irq + softirq,
    total: user + nice + system + idle + iowait + irq + softirq + steal,
  };
}

/**
 * Waits until the machine is quiet (the previous part's syncs, status writes and deletions
 * worked off): less than a quarter of its CPU busy over 3 s, or, where idle tenants keep it
 * busier than that, three 3 s windows in a row within 3 points of one another, the last at most
 * a point lower than the first and under 90 % (a plateau, not a load still falling nor a
 * saturated machine); at most `timeoutMs`. Returns the busy share of the last 3 s, so the report
 * says what the next part started from.
 */
async function quiet(timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  const windows: number[] = [];
  for (;;) {
    const a = await machineJiffies();
    await new Promise((r) => setTimeout(r, 3000));
    const b = await machineJiffies();
    const busy = (b.busy - a.busy) / Math.max(1, b.total - a.total);
    windows.push(busy);
    const last = windows.slice(-3);
    // Flat, not falling, and not a machine still saturated by the previous part's backlog.
    const plateau =
      last.length === 3 &&
      Math.max(...last) - Math.min(...last) <= 0.03 &&
      last[2]! >= last[0]! - 0.01 &&
      busy < 0.9;
    if (busy < 0.25 || plateau || Date.now() > deadline) return busy;
  }
}

/** Percentile curve (1..100) of latencies, for a plot. */
const curve = (series: string, xs: number[]) =>
  Array.from({ length: 100 }, (_, i) => ({ series, percentile: i + 1, ms: percentile(xs, i + 1) }));

/**
 * When each pod passed each stage, seen by watches: bound (spec.nodeName set), Running, and for a
 * tenant pod its host pod (found by the tenant pod's uid in its annotation) created and Running.
 */
class StageTracer {
  private readonly at = new Map<string, Record<string, number>>();
  private readonly watches: ListWatch<V1Pod>[] = [];

  private mark(uid: string, stage: string): void {
    const t = this.at.get(uid) ?? {};
    t[stage] ??= performance.now();
    this.at.set(uid, t);
  }

  /**
   * Traces the pods of `namespace` (all namespaces: undefined). `mirrors`: only host pods made
   * for tenant pods, by the tenant pod's uid (a host-wide watch, or a tenant's host namespace).
   */
  async watch(
    kc: KubeConfig,
    namespace: string | undefined,
    mirrors = namespace === undefined,
  ): Promise<void> {
    const core = kc.makeApiClient(CoreV1Api);
    const w = new ListWatch<V1Pod>(
      namespace ? `/api/v1/namespaces/${namespace}/pods` : '/api/v1/pods',
      new Watch(kc),
      () => (namespace ? core.listNamespacedPod({ namespace }) : core.listPodForAllNamespaces()),
      false,
    );
    const seen = (p: V1Pod) => {
      const mirrorOf = p.metadata?.annotations?.[PodAnnotation.uid];
      const [uid, prefix] = mirrorOf ? [mirrorOf, 'host '] : [p.metadata!.uid!, ''];
      if (!mirrorOf && mirrors) return; // the host's own pods: traced by namespace
      this.mark(uid, `${prefix}seen`);
      if (p.spec?.nodeName) this.mark(uid, `${prefix}bound`);
      if (p.status?.phase === 'Running') this.mark(uid, `${prefix}Running`);
    };
    w.on('add', seen);
    w.on('update', seen);
    await w.start();
    this.watches.push(w);
  }

  async stop(): Promise<void> {
    await Promise.all(this.watches.map((w) => w.stop()));
  }

  /**
   * p50/p99 (ms) between consecutive stages, over every pod that passed both and the first (a
   * host-wide watch also sees other tenants' pods: they are not this trace's).
   */
  segments(stages: string[]): { from: string; to: string; p50: number; p99: number }[] {
    const out = [];
    for (let i = 1; i < stages.length; i++) {
      const xs = [...this.at.values()]
        .filter((t) => t[stages[0]!] !== undefined)
        .filter((t) => t[stages[i - 1]!] !== undefined && t[stages[i]!] !== undefined)
        .map((t) => t[stages[i]!]! - t[stages[i - 1]!]!);
      if (xs.length)
        out.push({ from: stages[i - 1]!, to: stages[i]!, p50: percentile(xs, 50), p99: percentile(xs, 99) });
    }
    return out;
  }
}

export const fairSync: Scenario = {
  mayBeZero: ['pods', 'noisy', 'quiet'],
  summary: "pods through clusterTree vs on the host directly, and one tenant under another one's load",
  quick: { tenants: 2, pods: 200, noisy: 1000, quiet: 50, settle: 120 },
  full: { tenants: 10, pods: 1000, noisy: 5000, quiet: 100, settle: 180 },
  async run({ env, out }, o) {
    const host = env.operator.host;
    const n = o.tenants!;
    const fairness = n >= 2 && o.noisy! > 0 && o.quiet! > 0;
    if (o.pods === 0 && !fairness)
      throw new Error(
        '--pods 0 leaves only the second part, which needs --tenants 2 or more and --noisy and --quiet above 0',
      );
    const lines: string[] = [];
    const json: Record<string, unknown> = {};
    const plotData: { series: string; percentile: number; ms: number }[] = [];
    const p = (xs: number[], q: number) => percentile(xs, q);
    const direct = o.pods! > 0 ? nodesFor('fs-host', n * o.pods!) : [];
    const promoted = Array.from({ length: n }, (_, i) =>
      nodesFor(
        `fs-t${i}`,
        o.pods! + (fairness && i === 0 ? o.noisy! : 0) + (fairness && i === 1 ? 3 * o.quiet! : 0),
      ),
    );
    await createKwokNodes(host.core, [...direct, ...promoted.flat()]);
    const vcs = await Promise.all(
      promoted.map(async (nodes, i) => {
        await createVC(host, `fs-${i}`, { promoteResources: { nodes } });
        return readyVC(host, `fs-${i}`);
      }),
    );
    const tenants = vcs.map(tenantKc);

    if (o.pods! > 0) {
      say(`direct: ${n} × ${o.pods} pods on the host...`);
      await Promise.all(Array.from({ length: n }, (_, i) => namespace(host.kubeConfig, `fs-direct-${i}`)));
      // The same watches as for the tenants' pods below (one host-wide, one a namespace), so this
      // process does the same work while it times both.
      const directTrace = new StageTracer();
      await directTrace.watch(host.kubeConfig, undefined);
      for (let i = 0; i < n; i++) await directTrace.watch(host.kubeConfig, `fs-direct-${i}`);
      const base = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          podRun(host.kubeConfig, `fs-direct-${i}`, o.pods!, KWOK_POD, CONCURRENCY),
        ),
      );
      await directTrace.stop();
      say('removing the direct pods...');
      await Promise.all(
        Array.from({ length: n }, (_, i) => host.core.deleteNamespace({ name: `fs-direct-${i}` })),
      );
      await waitFor('the direct namespaces gone', async () => {
        const left = (await host.core.listNamespace()).items.filter((ns) =>
          ns.metadata?.name?.startsWith('fs-direct-'),
        );
        return left.length ? undefined : true;
      });

      say(`through clusterTree: ${n} tenants × ${o.pods} pods...`);
      await Promise.all(tenants.map((kc) => namespace(kc, 'load')));
      const trace = new StageTracer();
      await trace.watch(host.kubeConfig, undefined);
      for (const kc of tenants) await trace.watch(kc, 'load');
      const product = await Promise.all(
        tenants.map((kc) => podRun(kc, 'load', o.pods!, KWOK_POD, CONCURRENCY)),
      );
      await trace.stop();
      const baseLat = base.flatMap((r) => r.latencies);
      const prodLat = product.flatMap((r) => r.latencies);
      lines.push(
        `fair sync: ${n} × ${o.pods} pods, create call -> Running seen by a watch (ms)`,
        `                          p50      p99   pods/s`,
        `  direct on the host   ${p(baseLat, 50).toFixed(0).padStart(6)} ${p(baseLat, 99).toFixed(0).padStart(8)} ${(baseLat.length / (Math.max(...base.map((r) => r.wallMs)) / 1000)).toFixed(0).padStart(8)}`,
        `  through clusterTree  ${p(prodLat, 50).toFixed(0).padStart(6)} ${p(prodLat, 99).toFixed(0).padStart(8)} ${(prodLat.length / (Math.max(...product.map((r) => r.wallMs)) / 1000)).toFixed(0).padStart(8)}`,
        `  ratio p50 ${ratio(p(prodLat, 50), p(baseLat, 50))}, p99 ${ratio(p(prodLat, 99), p(baseLat, 99))}; target p99 ≤ 1.3×: ${p(prodLat, 99) <= 1.3 * p(baseLat, 99) ? 'met' : 'missed'}`,
      );
      // Where the time goes: from the first watch event of a pod to Running, stage by stage.
      const stages = {
        direct: directTrace.segments(['seen', 'bound', 'Running']),
        clusterTree: trace.segments(['seen', 'bound', 'host seen', 'host Running', 'Running']),
      };
      lines.push('  stages (ms, p50 / p99), from the first watch event of the pod:');
      for (const [path, segs] of Object.entries(stages))
        lines.push(
          `    ${path.padEnd(12)} ${segs.map((g) => `${g.from} -> ${g.to} ${g.p50.toFixed(0)} / ${g.p99.toFixed(0)}`).join(', ')}`,
        );
      Object.assign(json, {
        stages,
        direct: { p50: p(baseLat, 50), p99: p(baseLat, 99) },
        clusterTree: { p50: p(prodLat, 50), p99: p(prodLat, 99) },
        p99Ratio: p(prodLat, 99) / p(baseLat, 99),
      });
      plotData.push(...curve('direct on the host', baseLat), ...curve('through clusterTree', prodLat));
    }

    if (fairness) {
      const [noisyKc, quietKc] = [tenants[0]!, tenants[1]!];
      const quietVC = vcs[1]!.metadata;
      // Its host pods alone: a host-wide watch would decode the noisy tenant's thousands too,
      // in the loaded run only.
      const quietHost = hostNamespace({ namespace: quietVC.namespace, name: quietVC.name, uid: quietVC.uid });
      const runs = ['alone', 'loaded', 'after'] as const;
      await Promise.all([...runs.map((r) => namespace(quietKc, `quiet-${r}`)), namespace(noisyKc, 'noisy')]);
      const STAGES = ['seen', 'bound', 'host seen', 'host Running', 'Running'];
      /** The quiet tenant's pods once the machine is quiet, traced stage by stage. */
      const quietRun = async (run: (typeof runs)[number], during?: () => void) => {
        const busy = await quiet(o.settle! * 1000);
        say(
          `quiet tenant, ${run}: ${o.quiet} pods (the machine ${(busy * 100).toFixed(0)} % busy before)...`,
        );
        const t = new StageTracer();
        await t.watch(host.kubeConfig, quietHost, true);
        await t.watch(quietKc, `quiet-${run}`);
        if (during) {
          during();
          await new Promise((r) => setTimeout(r, 2000)); // the noisy tenant's queue is filling
        }
        const r = await podRun(quietKc, `quiet-${run}`, o.quiet!, KWOK_POD, CONCURRENCY);
        await t.stop();
        return { latencies: r.latencies, stages: t.segments(STAGES), busyBefore: busy };
      };
      const alone = await quietRun('alone');
      // Settled from the start (a failure is thrown below, once the quiet run has ended).
      let noisy: Promise<{ p99: number } | { error: unknown }> | undefined;
      const loaded = await quietRun('loaded', () => {
        noisy = podRun(noisyKc, 'noisy', o.noisy!, KWOK_POD, CONCURRENCY).then(
          (r) => ({ p99: p(r.latencies, 99) }),
          (error: unknown) => ({ error }),
        );
      });
      const noisyRun = (await noisy)!;
      if ('error' in noisyRun) throw noisyRun.error;
      const noisyP99 = noisyRun.p99;
      const after = await quietRun('after');
      // The baseline: both runs alone, before and after, so drift between them counts against
      // neither side.
      const a = (p(alone.latencies, 99) + p(after.latencies, 99)) / 2;
      const l = p(loaded.latencies, 99);
      const rise = (l / a - 1) * 100;
      lines.push(
        '',
        `one tenant (${o.quiet} pods) while another creates ${o.noisy} (ms), each run started on a quiet machine`,
        `  quiet tenant alone p99 ${p(alone.latencies, 99).toFixed(0)} before and ${p(after.latencies, 99).toFixed(0)} after (baseline: their mean ${a.toFixed(0)})`,
        `  under load p99 ${l.toFixed(0)}: ${ratio(l, a)}, a rise of ${rise.toFixed(0)} %; target ≤ 20 %: ${rise <= 20 ? 'met' : 'missed'}`,
        `  the noisy tenant's own p99 ${noisyP99.toFixed(0)}`,
        "  stages of the quiet tenant's pods (ms, p50 / p99):",
      );
      for (const [run, r] of [
        ['alone', alone],
        ['loaded', loaded],
        ['after', after],
      ] as const)
        lines.push(
          `    ${run.padEnd(7)} ${r.stages.map((g) => `${g.from} -> ${g.to} ${g.p50.toFixed(0)} / ${g.p99.toFixed(0)}`).join(', ')}`,
        );
      json.fairness = {
        aloneP99: p(alone.latencies, 99),
        afterP99: p(after.latencies, 99),
        baselineP99: a,
        loadedP99: l,
        risePercent: rise,
        noisyP99,
        stages: { alone: alone.stages, loaded: loaded.stages, after: after.stages },
        busyBefore: { alone: alone.busyBefore, loaded: loaded.busyBefore, after: after.busyBefore },
      };
      // Short names, for a legend beside the plot.
      plotData.push(
        ...curve('quiet, alone before', alone.latencies),
        ...curve('quiet, beside noisy', loaded.latencies),
        ...curve('quiet, alone after', after.latencies),
      );
    }
    const plot = await writePlot(out, 'fairsync', {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: 'Pod create -> Running, latency by percentile (ms)',
      width: 480,
      height: 260,
      data: { values: plotData },
      mark: 'line',
      encoding: {
        x: { field: 'percentile', type: 'quantitative' },
        y: { field: 'ms', type: 'quantitative', title: 'ms' },
        color: { field: 'series', type: 'nominal', title: null, legend: { labelLimit: 400 } },
      },
    });
    lines.push(`  plot: ${plot}`);
    return { lines, json };
  },
};
