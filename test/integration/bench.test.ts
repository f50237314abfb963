/**
 * The benchmark harness keeps working (issue 10): `npm run bench -- smoke` (one tenant, 100 pods)
 * runs the density and fair-sync scenarios end to end on real components, prints its figures
 * with their baselines and ratios, and renders its plots. The figures themselves are not judged
 * here (timed tests are not what benchmarks are for); that they were measured is.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { routeOf } from '../../src/node/network.js';
import { OPERATOR_NODE_ENV, OPERATOR_NODE_FLAGS } from '../../src/runtime/nodeFlags.js';

const MAIN = join(process.cwd(), 'dist', 'bench', 'main.js');

const children = new Set<ChildProcess>();

function bench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', ...OPERATOR_NODE_FLAGS, MAIN, ...args], {
      // As `npm run bench` runs it.
      env: { ...process.env, ...OPERATOR_NODE_ENV },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    child.on('exit', () => children.delete(child));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const dirs: string[] = [];
afterAll(async () => {
  // A run cut short by the test's timeout: SIGTERM makes the benchmark stop all it started.
  for (const child of children) {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

it('refuses an unknown scenario or size with the usage, before starting anything', async () => {
  const unknown = await bench(['nosuch']);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toContain('unknown scenario: nosuch');
  expect(unknown.stderr).toMatch(/density .*\n\s+quick: --tenants 3/);
  const help = await bench(['speed', '--help']);
  expect(help.code).toBe(0);
  expect(help.stdout).toContain('usage: npm run bench -- <scenario>');
  const badFlag = await bench(['density', '--pods', '5']);
  expect(badFlag.code).toBe(1);
  expect(badFlag.stderr).toMatch(/Unknown option '--pods'/);
  const badNumber = await bench(['density', '--tenants', 'many']);
  expect(badNumber.code).toBe(1);
  expect(badNumber.stderr).toContain('--tenants must be a whole number ≥ 1, not many');
  const zero = await bench(['speed', '--rounds', '0']);
  expect(zero.code).toBe(1);
  expect(zero.stderr).toContain('--rounds must be a whole number ≥ 1, not 0');
  const stray = await bench(['speed', 'now']);
  expect(stray.code).toBe(1);
  expect(stray.stderr).toContain('unexpected argument: now');
});

it(
  "smoke: a tenant's density, 100 pods through two tenants and one beside the other's load, next to their baselines, with plots",
  { timeout: 600_000 },
  async () => {
    const out = await mkdtemp(join(tmpdir(), 'kvc-bench-smoke-out-'));
    dirs.push(out);
    const routeBefore = await routeOf('10.96.0.10');
    const run = await bench(['smoke', '--out', out]);
    expect(run.code, run.stderr.slice(-3000)).toBe(0);
    const last = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as {
      bench: string;
      serviceRoute: string;
      node: { version: string; flags: string[]; MALLOC_ARENA_MAX?: string };
      density: {
        tenantsReady: number;
        perTenant: {
          rssMiB: number;
          pssMiB: number;
          controlPlaneRssMiB: number;
          machineMiB: number;
          components: Record<string, number>;
          idleCores: Record<string, number>;
        };
        plainControlPlane: { rss: number; idleCores: number };
        getNamespaces: { p99: number; plainP99: number };
      };
      fairSync: {
        direct: { p99: number };
        clusterTree: { p99: number };
        p99Ratio: number;
        stages: { clusterTree: { from: string; to: string; p50: number }[] };
        fairness: {
          aloneP99: number;
          afterP99: number;
          baselineP99: number;
          loadedP99: number;
          noisyP99: number;
          stages: Record<'alone' | 'loaded' | 'after', { from: string; to: string; p99: number }[]>;
          busyBefore: Record<'alone' | 'loaded' | 'after', number>;
        };
      };
    };
    expect(last.bench).toBe('smoke');
    // While the run lasted, the Service range stayed on this machine (the suite's real node's
    // bridge, or a guard route), never the default gateway; the run left the route as it was.
    expect(last.serviceRoute).not.toMatch(/ via /);
    expect(last.serviceRoute).toMatch(/^(unroutable .*No route to host|10\.96\.0\.10 dev kvc0 )/);
    expect(await routeOf('10.96.0.10')).toBe(routeBefore);
    // The run says how its Node.js ran the operator.
    expect(last.node).toMatchObject({
      version: process.version,
      flags: ['--expose-gc', ...OPERATOR_NODE_FLAGS],
      ...OPERATOR_NODE_ENV,
    });
    const d = last.density;
    expect(d.tenantsReady).toBe(1);
    // By default the API server, controller-manager and scheduler are one process, the API server's.
    expect(Object.keys(d.perTenant.components).sort()).toEqual(['clustertree', 'etcd', 'kube-apiserver']);
    for (const mib of Object.values(d.perTenant.components)) expect(mib).toBeGreaterThan(5);
    expect(d.perTenant.pssMiB).toBeLessThanOrEqual(d.perTenant.rssMiB);
    // The control-plane processes (four, or etcd and kube-control-plane) against the plain
    // control plane: clusterTree left out.
    expect(d.perTenant.controlPlaneRssMiB).toBeCloseTo(
      d.perTenant.rssMiB - d.perTenant.components.clustertree!,
      3,
    );
    expect(d.perTenant.machineMiB).toBeGreaterThan(0);
    expect(Object.keys(d.perTenant.idleCores)).toContain('kube-apiserver');
    expect(d.plainControlPlane.rss).toBeGreaterThan(50);
    expect(d.plainControlPlane.idleCores).toBeGreaterThan(0);
    expect(d.getNamespaces.p99).toBeGreaterThan(0);
    expect(d.getNamespaces.plainP99).toBeGreaterThan(0);
    const f = last.fairSync;
    expect(f.direct.p99).toBeGreaterThan(0);
    expect(f.clusterTree.p99).toBeGreaterThan(0);
    expect(Number.isFinite(f.p99Ratio) && f.p99Ratio > 0).toBe(true);
    // Where a tenant pod's time went: every stage from the tenant's pod to the host's and back.
    expect(f.stages.clusterTree.map((s) => `${s.from} -> ${s.to}`)).toEqual([
      'seen -> bound',
      'bound -> host seen',
      'host seen -> host Running',
      'host Running -> Running',
    ]);
    // One tenant's pods alone (before and after) and beside another's: each run traced.
    const fair = f.fairness;
    for (const p99 of [fair.aloneP99, fair.afterP99, fair.loadedP99, fair.noisyP99])
      expect(p99).toBeGreaterThan(0);
    expect(fair.baselineP99).toBeCloseTo((fair.aloneP99 + fair.afterP99) / 2, 3);
    for (const run of ['alone', 'loaded', 'after'] as const) {
      expect(fair.stages[run].map((s) => s.to)).toEqual(['bound', 'host seen', 'host Running', 'Running']);
      expect(fair.busyBefore[run]).toBeGreaterThanOrEqual(0);
      expect(fair.busyBefore[run]).toBeLessThanOrEqual(1);
    }
    expect(run.stdout).toMatch(/under load p99 \d+: [\d.]+×, a rise of -?\d+ %/);
    // The report a person reads: each figure with its baseline and ratio.
    expect(run.stdout).toMatch(/RSS, its control-plane processes\s+\d+\s+\d+\s+[\d.]+×/);
    expect(run.stdout).toMatch(/ratio p50 [\d.]+×, p99 [\d.]+×/);
    for (const plot of ['density-memory.svg', 'density-get-ns.svg', 'fairsync.svg']) {
      const svg = await readFile(join(out, plot), 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toMatch(/<path|<line|<rect/);
    }
    const fairPlot = await readFile(join(out, 'fairsync.svg'), 'utf8');
    expect(fairPlot).toContain('through clusterTree');
    // Each series named in full in the legend (not cut short).
    for (const series of ['quiet, alone before', 'quiet, beside noisy', 'quiet, alone after'])
      expect(fairPlot).toContain(`>${series}</text>`);
    expect(JSON.parse(await readFile(join(out, 'smoke.json'), 'utf8'))).toMatchObject({ bench: 'smoke' });
  },
);
