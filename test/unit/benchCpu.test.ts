/**
 * The speed benchmark's accounting (bench/common.ts): what each kind of process spent between
 * two snapshots of /proc, and what grew between two readings of counters.
 */
import { expect, it } from 'vitest';
import { countsBetween, cpuBetween, cpuSnapshot, type CpuSnapshot } from '../../bench/common.js';

const snapshot = (busy: number, total: number, ps: [number, string, number][]): CpuSnapshot => ({
  busy,
  total,
  processes: new Map(ps.map(([pid, name, ticks]) => [pid, { name, ticks }])),
});

it('counts each process from its ticks before, a new one (or a reused pid) from zero', () => {
  const before = snapshot(100, 1_000, [
    [process.pid, 'node', 500],
    [10, 'kube-apiserver', 300],
    [11, 'kworker/0:1-events', 40],
    [12, 'etcd', 70], // ends, and its pid is taken by another process
  ]);
  const after = snapshot(250, 1_200, [
    [process.pid, 'node', 530],
    [10, 'kube-apiserver', 350],
    [11, 'kworker/0:1-mm_percpu_wq', 45],
    [12, 'kube-control-pl', 20],
    [13, 'etcd', 80],
    [14, 'sleep', 0],
  ]);
  const { byName, busy } = cpuBetween(before, after);
  expect(Object.fromEntries(byName)).toEqual({
    'this process (bench, operator)': 0.3,
    'kube-apiserver': 0.5,
    'kernel workers': 0.05,
    'kube-control-pl (new)': 0.2,
    'etcd (new)': 0.8,
  });
  expect(busy).toBeCloseTo(150 / 200);
});

it('reads this machine: this process is in it, and the machine has spent CPU', async () => {
  const a = await cpuSnapshot();
  const start = process.cpuUsage();
  while (process.cpuUsage(start).user < 50_000); // 50 ms of this process's CPU
  const b = await cpuSnapshot();
  expect(a.processes.has(process.pid)).toBe(true);
  expect(b.total).toBeGreaterThan(a.total);
  expect(cpuBetween(a, b).byName.get('this process (bench, operator)')).toBeGreaterThan(0);
});

it('keeps the counters that grew, by how much', () => {
  const before = new Map([
    ['GET secrets', 4],
    ['PATCH virtualclusters/status', 10],
  ]);
  const after = new Map([
    ['GET secrets', 10],
    ['PATCH virtualclusters/status', 10],
    ['POST secrets', 2],
  ]);
  expect(Object.fromEntries(countsBetween(before, after))).toEqual({ 'GET secrets': 6, 'POST secrets': 2 });
});
