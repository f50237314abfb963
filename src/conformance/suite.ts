/**
 * Runs the upstream e2e suite (`e2e.test`) against one cluster's kubeconfig: serially as a plain
 * process, or with the ginkgo CLI for N parallel processes (Serial specs still run alone, last).
 * Everything the suite prints goes to a log file; each finished spec is reported as it ends.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ProgressParser, type SpecEvent, type Tally } from './progress.js';
import { parseJUnit, type SpecResult } from './report.js';

export interface SuiteBinaries {
  e2eTest: string;
  ginkgo: string;
}

export interface SuiteOptions {
  binaries: SuiteBinaries;
  kubeconfig: string;
  focus: string;
  skip: string;
  parallel: number;
  /** JUnit report, the suite's log and its scratch files go here. */
  outDir: string;
  onSpec?: (e: SpecEvent, tally: Tally) => void;
  /** Ends the run (SIGTERM to the suite, which then writes its report). */
  signal?: AbortSignal;
}

export interface SuiteRun {
  exitCode: number;
  results: SpecResult[];
  tally: Tally;
  logFile: string;
  durationMs: number;
}

/** The suite's own flags, the same whether e2e.test runs alone or under the ginkgo CLI. */
export function suiteArgs(o: Pick<SuiteOptions, 'kubeconfig' | 'outDir'>): string[] {
  return [
    `--kubeconfig=${o.kubeconfig}`,
    '--provider=skeleton',
    `--report-dir=${o.outDir}`,
    `--e2e-output-dir=${join(o.outDir, 'e2e')}`,
    // Nothing here to ssh to for node logs; every node the tenant has must be Ready.
    '--dump-logs-on-failure=false',
    '--allowed-not-ready-nodes=0',
  ];
}

export function commandLine(o: SuiteOptions): { command: string; args: string[] } {
  const common = ['--no-color', '-v', '--timeout=24h'];
  if (o.parallel > 1)
    return {
      command: o.binaries.ginkgo,
      args: [
        `--procs=${o.parallel}`,
        ...common,
        `--focus=${o.focus}`,
        ...(o.skip ? [`--skip=${o.skip}`] : []),
        o.binaries.e2eTest,
        '--',
        ...suiteArgs(o),
      ],
    };
  return {
    command: o.binaries.e2eTest,
    args: [
      ...common.map((f) => f.replace(/^--?/, '--ginkgo.')),
      `--ginkgo.focus=${o.focus}`,
      ...(o.skip ? [`--ginkgo.skip=${o.skip}`] : []),
      ...suiteArgs(o),
    ],
  };
}

/** Process groups of suites running now: what a forced exit must not leave behind. */
const running = new Set<number>();

/** Kills every running suite's process group at once (a second Ctrl-C). */
export function killSuites(): void {
  for (const pgid of running)
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
}

export async function runSuite(o: SuiteOptions): Promise<SuiteRun> {
  if (o.signal?.aborted) throw new Error('interrupted before the suite started');
  await mkdir(join(o.outDir, 'e2e'), { recursive: true });
  const logFile = join(o.outDir, 'e2e.log');
  const log = createWriteStream(logFile);
  const parser = new ProgressParser(o.onSpec ?? (() => undefined));
  const { command, args } = commandLine(o);
  const t0 = Date.now();
  // Its own process group: an interrupt reaches the ginkgo CLI and every suite process it runs.
  const child = spawn(command, args, { cwd: o.outDir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const timers: NodeJS.Timeout[] = [];
  const group = (sig: NodeJS.Signals) => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null)
      try {
        process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
  };
  // Ginkgo's first interrupt runs the specs' cleanup (which can wait minutes on a namespace),
  // the second one aborts it; what still runs after that is killed.
  const stop = () => {
    group('SIGINT');
    timers.push(
      setTimeout(() => group('SIGINT'), 30_000),
      setTimeout(() => group('SIGKILL'), 90_000),
    );
  };
  o.signal?.addEventListener('abort', stop, { once: true });
  if (child.pid !== undefined) running.add(child.pid);
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (l) => {
    log.write(`${l}\n`);
    parser.line(l);
  });
  child.stderr.on('data', (d: Buffer) => log.write(d));
  const exitCode = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
  });
  o.signal?.removeEventListener('abort', stop);
  if (child.pid !== undefined) running.delete(child.pid);
  for (const t of timers) clearTimeout(t);
  await new Promise<void>((resolve) => log.end(resolve));
  // The suite writes junit_01.xml (one report, merged across parallel processes).
  const reports = (await readdir(o.outDir)).filter((f) => /^junit.*\.xml$/.test(f));
  const results: SpecResult[] = [];
  for (const f of reports) results.push(...parseJUnit(await readFile(join(o.outDir, f), 'utf8')));
  return { exitCode, results, tally: parser.tally, logFile, durationMs: Date.now() - t0 };
}
