/**
 * The benchmarks (issue 10): `npm run bench -- <scenario> [--full] [--<size> N] [--out dir]`.
 * Each scenario starts one local kosmos-vc (Temporal dev server, embedded host with kwok,
 * operator), measures its baseline and the product in the same run, prints both with their
 * ratio, writes its plots (SVG) and a JSON result to --out, and prints the JSON as the last line.
 * The worker takes KOSMOS_VC_WORKFLOW_CACHE and KOSMOS_VC_CLUSTERTREE from the environment.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { routeOf } from '../src/node/network.js';
import { HOST_CLUSTER_DNS } from '../src/runtime/embedded.js';
import { createLogger } from '../src/worker/logger.js';
import { readOperatorEnv } from '../src/worker/config.js';
import { startLocalEnvironment } from '../src/worker/localEnvironment.js';
import { burst } from './burst.js';
import { density } from './density.js';
import { fairSync } from './fairsync.js';
import { nodes } from './nodes.js';
import { runtimes } from './runtimes.js';
import { leases } from './leases.js';
import { oneProcess } from './oneprocess.js';
import { operatorScale } from './operator.js';
import { pool } from './pool.js';
import type { Scenario } from './scenario.js';
import { smoke } from './smoke.js';
import { speed } from './speed.js';
import { tenants } from './tenants.js';

export const SCENARIOS: Record<string, Scenario> = {
  speed,
  pool,
  density,
  oneprocess: oneProcess,
  leases,
  burst,
  fairsync: fairSync,
  nodes,
  operator: operatorScale,
  runtimes,
  tenants,
  smoke,
};

function usage(): string {
  return [
    'usage: npm run bench -- <scenario> [--full] [--<size> N] [--out dir]',
    ...Object.entries(SCENARIOS).map(
      ([name, s]) =>
        `  ${name.padEnd(9)} ${s.summary}\n            quick: ${flags(s.quick)}; --full: ${flags(s.full)}`,
    ),
    'The worker takes KOSMOS_VC_WORKFLOW_CACHE and KOSMOS_VC_CLUSTERTREE as `kosmos-vc up` does.',
  ].join('\n');
}
const flags = (o: Record<string, number>) =>
  Object.entries(o)
    .map(([k, v]) => `--${k} ${v}`)
    .join(' ');

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const name = argv[0] && !argv[0].startsWith('-') ? argv[0] : undefined;
  const scenario = name ? SCENARIOS[name] : undefined;
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  if (!scenario) {
    process.stderr.write(`${name ? `unknown scenario: ${name}` : 'no scenario given'}\n${usage()}\n`);
    process.exit(2);
  }
  // Strict: an unknown flag, a stray argument or a size that is not a whole number stops the run.
  const { values, positionals } = parseArgs({
    args: argv.slice(1),
    allowPositionals: true,
    strict: true,
    options: {
      full: { type: 'boolean' },
      out: { type: 'string' },
      ...Object.fromEntries(Object.keys(scenario.quick).map((k) => [k, { type: 'string' as const }])),
    },
  });
  if (positionals.length) throw new Error(`unexpected argument: ${positionals.join(' ')}`);
  const flagValues = values as Record<string, string | boolean | undefined>;
  const o: Record<string, number> = { ...(values.full ? scenario.full : scenario.quick) };
  for (const k of Object.keys(scenario.quick)) {
    const v = flagValues[k];
    if (typeof v !== 'string') continue;
    const n = Number(v);
    const least = scenario.mayBeZero?.includes(k) ? 0 : 1;
    if (!Number.isInteger(n) || n < least)
      throw new Error(`--${k} must be a whole number ≥ ${least}, not ${v}`);
    o[k] = n;
  }
  const out = resolve(typeof values.out === 'string' ? values.out : join('bench-results', name!));
  await mkdir(out, { recursive: true });

  const operatorEnv = readOperatorEnv();
  const worker = {
    ...(operatorEnv.KOSMOS_VC_WORKFLOW_CACHE !== undefined
      ? { workflowCache: operatorEnv.KOSMOS_VC_WORKFLOW_CACHE }
      : {}),
    sharedClusterTree: operatorEnv.KOSMOS_VC_CLUSTERTREE === 'shared',
    ...(scenario.warmPool ? { warmPool: { size: scenario.warmPool } } : {}),
    ...(operatorEnv.KOSMOS_VC_ONE_PROCESS !== undefined
      ? { oneProcess: operatorEnv.KOSMOS_VC_ONE_PROCESS }
      : {}),
  };
  const env = await startLocalEnvironment({
    prefix: `kvc-bench-${name}-`,
    taskQueue: `bench-${name}`,
    logger: createLogger({ level: 'error' }),
    // Measures kosmos-vc, not this machine's disk: host and tenant etcds skip fsync.
    etcdUnsafeNoFsync: true,
    realNode: scenario.realNode ?? false,
    // The worker's workflow cache, as `kosmos-vc up` takes it.
    worker,
  });
  // Every process of the run is stopped by its PID, also when the run is interrupted.
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= env.close());
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      process.stderr.write(`${signal}: stopping everything the benchmark started...\n`);
      void close().finally(() => process.exit(130));
    });
  try {
    // Where a packet to a ClusterIP of the host's Service range would go while the run lasts: kept
    // on this machine (the real node's bridge, or a route that carries nothing), never the gateway.
    const serviceRoute = await routeOf(HOST_CLUSTER_DNS);
    const t0 = Date.now();
    // The operator's default: one process (control planes here are processes).
    const result = await scenario.run({ env, out, oneProcess: worker.oneProcess ?? true }, o);
    // How this Node.js ran (the operator runs in it: its flags are part of the figure).
    const node = {
      version: process.version,
      flags: process.execArgv,
      ...(process.env.NODE_OPTIONS ? { NODE_OPTIONS: process.env.NODE_OPTIONS } : {}),
      ...(process.env.MALLOC_ARENA_MAX ? { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX } : {}),
    };
    const seconds = (Date.now() - t0) / 1000;
    const json = { bench: name, options: o, worker, node, serviceRoute, seconds, ...result.json };
    await writeFile(join(out, `${name}.json`), JSON.stringify(json, null, 2) + '\n');
    process.stdout.write(['', ...result.lines, ''].join('\n') + '\n' + JSON.stringify(json) + '\n');
  } finally {
    await close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
