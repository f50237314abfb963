/**
 * The benchmark harness keeps working (issue 10): `npm run bench -- smoke` (one tenant, 100 pods)
 * runs the density and fair-sync scenarios end to end on real components, prints its figures
 * with their baselines and ratios, and renders its plots. The figures themselves are not judged
 * here (timed tests are not what benchmarks are for); that they were measured is.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';

const MAIN = join(process.cwd(), 'dist', 'bench', 'main.js');

function bench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', MAIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
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
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

it('refuses an unknown scenario or size with the usage, before starting anything', async () => {
  const unknown = await bench(['nosuch']);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toContain('unknown scenario: nosuch');
  expect(unknown.stderr).toMatch(/density .*\n\s+quick: --tenants 3/);
  const badFlag = await bench(['density', '--pods', '5']);
  expect(badFlag.code).toBe(1);
  expect(badFlag.stderr).toMatch(/Unknown option '--pods'/);
  const badNumber = await bench(['density', '--tenants', 'many']);
  expect(badNumber.code).toBe(1);
  expect(badNumber.stderr).toContain('--tenants must be a number');
});

it(
  'smoke: one tenant and 100 pods, measured next to their baselines, with plots',
  { timeout: 600_000 },
  async () => {
    const out = await mkdtemp(join(tmpdir(), 'kvc-bench-smoke-out-'));
    dirs.push(out);
    const run = await bench(['smoke', '--out', out]);
    expect(run.code, run.stderr.slice(-3000)).toBe(0);
    const last = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as {
      bench: string;
      density: {
        tenantsReady: number;
        perTenant: { rssMiB: number; pssMiB: number; components: Record<string, number> };
        plainControlPlane: { rss: number };
        getNamespaces: { p99: number; hostP99: number };
      };
      fairSync: { direct: { p99: number }; clusterTree: { p99: number }; p99Ratio: number };
    };
    expect(last.bench).toBe('smoke');
    const d = last.density;
    expect(d.tenantsReady).toBe(1);
    expect(Object.keys(d.perTenant.components).sort()).toEqual(
      ['clustertree', 'etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'].sort(),
    );
    for (const mib of Object.values(d.perTenant.components)) expect(mib).toBeGreaterThan(5);
    expect(d.perTenant.pssMiB).toBeLessThanOrEqual(d.perTenant.rssMiB);
    expect(d.plainControlPlane.rss).toBeGreaterThan(50);
    expect(d.getNamespaces.p99).toBeGreaterThan(0);
    expect(d.getNamespaces.hostP99).toBeGreaterThan(0);
    const f = last.fairSync;
    expect(f.direct.p99).toBeGreaterThan(0);
    expect(f.clusterTree.p99).toBeGreaterThan(0);
    expect(f.p99Ratio).toBeCloseTo(f.clusterTree.p99 / f.direct.p99, 5);
    // The report a person reads: each figure with its baseline and ratio.
    expect(run.stdout).toMatch(/RSS, all its processes\s+\d+\s+\d+\s+[\d.]+×/);
    expect(run.stdout).toMatch(/ratio p50 [\d.]+×, p99 [\d.]+×/);
    for (const plot of ['density-memory.svg', 'density-get-ns.svg', 'fairsync.svg']) {
      const svg = await readFile(join(out, plot), 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toMatch(/<path|<line|<rect/);
    }
    expect(await readFile(join(out, 'fairsync.svg'), 'utf8')).toContain('through clusterTree');
    expect(JSON.parse(await readFile(join(out, 'smoke.json'), 'utf8'))).toMatchObject({ bench: 'smoke' });
  },
);
