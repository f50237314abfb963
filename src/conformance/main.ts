#!/usr/bin/env node
/**
 * npm run conformance [-- --focus <regex>] [--skip <regex>] [--parallel N] [--report <file>]
 *                     [--kubeconfig <tenant kubeconfig>] [--keep]
 *
 * Runs the upstream Kubernetes conformance suite against a kosmos-vc tenant and writes the
 * result to docs/conformance.md. Without --kubeconfig it starts the whole product on this
 * machine (Temporal dev server, embedded host with its real node, operator), creates a
 * VirtualCluster that promotes the real node, runs the suite with that tenant's kubeconfig, and
 * removes the tenant and everything it started afterwards. With --kubeconfig it runs against
 * that (existing) tenant and creates nothing.
 */
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, release, totalmem, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from '../api/virtualCluster.js';
import { repoRoot, resolveConformanceBinaries } from '../runtime/binaries.js';
import { createLogger } from '../worker/logger.js';
import { startLocalEnvironment, type LocalEnvironment } from '../worker/localEnvironment.js';
import type { SpecEvent, Tally } from './progress.js';
import { renderMarkdown } from './report.js';
import { CONFORMANCE_FOCUS, CONFORMANCE_TENANT, DESIGN_SKIPS, designSkipRegex } from './skips.js';
import { killSuites, runSuite } from './suite.js';

const USAGE = `usage: npm run conformance -- [--focus REGEX] [--skip REGEX] [--parallel N] [--report FILE]
                               [--kubeconfig TENANT_KUBECONFIG] [--keep]
  --focus       specs to run (default: ${CONFORMANCE_FOCUS})
  --skip        specs to leave out, on top of the documented design skips
  --parallel    parallel suite processes (default 1: serial); [Serial] specs still run alone
  --report      where the result goes (default docs/conformance.md; "-" for none)
  --kubeconfig  run against this existing tenant instead of starting one on this machine
  --keep        leave the tenant (and the local environment) running afterwards; Ctrl-C ends it`;

const say = (s: string): void => void process.stderr.write(`${s}\n`);
const clock = (ms: number): string => {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
};

function options() {
  const { values } = parseArgs({
    options: {
      focus: { type: 'string', default: CONFORMANCE_FOCUS },
      skip: { type: 'string', default: '' },
      parallel: { type: 'string', default: '1' },
      report: { type: 'string', default: join(repoRoot(), 'docs', 'conformance.md') },
      kubeconfig: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    say(USAGE);
    process.exit(0);
  }
  const parallel = Number(values.parallel);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 32)
    throw new Error(`--parallel must be a whole number from 1 to 32, not "${values.parallel}"`);
  for (const [flag, re] of [
    ['--focus', values.focus],
    ['--skip', values.skip],
  ] as const)
    try {
      new RegExp(re);
    } catch (e) {
      throw new Error(`${flag} is not a regular expression: ${(e as Error).message}`);
    }
  return { ...values, parallel };
}

function machine(): string {
  const c = cpus();
  return `${c.length} cores (${c[0]?.model.trim() ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}`;
}

async function kubernetesVersion(e2eTest: string): Promise<string> {
  const { stdout } = await promisify(execFile)(e2eTest, ['--version']).catch(() => ({ stdout: '' }));
  return /v\d+\.\d+\.\d+\S*/.exec(stdout)?.[0] ?? 'unknown';
}

/** Starts kosmos-vc on this machine and a tenant that promotes its real node. */
async function localTenant(
  dir: string,
  signal: AbortSignal,
): Promise<{ env: LocalEnvironment; kubeconfig: string; remove(): Promise<void> }> {
  const logger = createLogger({ level: 'warn' });
  const env = await startLocalEnvironment({
    prefix: 'kosmos-vc-conformance-',
    taskQueue: `conformance-${randomUUID()}`,
    logger,
    realNode: true,
    // The suite needs a privileged tenant (host network and ports): this operator allows it.
    allowPrivilegedTenants: true,
  });
  const name = 'conformance';
  const ref = { group: GROUP, version: VERSION, plural: PLURAL, namespace: 'default', name };
  const remove = async () => {
    say(`removing tenant ${name}...`);
    await env.operator.host.custom.deleteNamespacedCustomObject(ref).catch(() => undefined);
    const deadline = Date.now() + 300_000;
    while (
      Date.now() < deadline &&
      (await env.operator.host.getVirtualCluster({ namespace: 'default', name }))
    )
      await sleep(1000);
    await env.close();
  };
  try {
    if (!env.host.realNode)
      throw new Error(
        'this machine has no real node (see the warning above): the suite needs real containers',
      );
    await env.operator.host.custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace: 'default',
      body: {
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name, namespace: 'default' },
        spec: {
          promoteResources: { nodes: [env.host.realNode.name], resources: CONFORMANCE_TENANT.resources },
          podSecurity: CONFORMANCE_TENANT.podSecurity,
        },
      },
    });
    say(`tenant ${name}: provisioning (promotes ${env.host.realNode.name})...`);
    let phase = '';
    const deadline = Date.now() + 600_000;
    for (;;) {
      const vc = await env.operator.host.getVirtualCluster({ namespace: 'default', name });
      if (vc?.status?.phase && vc.status.phase !== phase) say(`tenant ${name}: ${(phase = vc.status.phase)}`);
      if (phase === 'Failed') throw new Error(`tenant ${name} failed: ${vc?.status?.message ?? ''}`);
      if (phase === 'Ready' && vc?.spec.kubeconfig) {
        const kubeconfig = join(dir, 'tenant.kubeconfig');
        await writeFile(kubeconfig, Buffer.from(vc.spec.kubeconfig, 'base64'), { mode: 0o600 });
        return { env, kubeconfig, remove };
      }
      if (Date.now() > deadline)
        throw new Error(`tenant ${name} not Ready after 10 min (phase ${phase || 'none'})`);
      if (signal.aborted) throw new Error('interrupted while the tenant was being provisioned');
      await sleep(1000);
    }
  } catch (e) {
    await remove();
    throw e;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<number> {
  const o = options();
  const binaries = await resolveConformanceBinaries();
  const version = await kubernetesVersion(binaries.e2eTest);
  const outDir = await mkdtemp(join(tmpdir(), 'kosmos-vc-conformance-'));
  const skip = [designSkipRegex(), o.skip].filter(Boolean).join('|');
  const abort = new AbortController();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) {
      // The suite's processes go too; the tenant and the local environment are left as they are.
      killSuites();
      process.exit(130);
    }
    interrupted = true;
    say('interrupted: ending the suite, then cleaning up (Ctrl-C again to stop at once, leaving the tenant)');
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const tenant = o.kubeconfig
    ? { kubeconfig: resolve(o.kubeconfig), remove: () => Promise.resolve() }
    : await localTenant(outDir, abort.signal);
  const t0 = Date.now();
  let exitCode = 1;
  try {
    say(`running the suite against ${tenant.kubeconfig} (log: ${join(outDir, 'e2e.log')})`);
    const onSpec = (e: SpecEvent, t: Tally) => {
      const mark = e.state === 'passed' ? 'ok  ' : e.state === 'failed' ? 'FAIL' : 'skip';
      const done = t.passed + t.failed + t.skipped;
      const name = e.name.replace(/ \[[^\]]*, [^\]]*\]$/, '');
      say(
        `[${String(done).padStart(3)}/${t.total}] ${clock(Date.now() - t0)} ${mark} ` +
          `(${t.failed} failed so far) ${name} (${e.seconds.toFixed(1)} s)`,
      );
    };
    const run = await runSuite({
      binaries,
      kubeconfig: tenant.kubeconfig,
      focus: o.focus,
      skip,
      parallel: o.parallel,
      outDir,
      onSpec,
      signal: abort.signal,
    });
    const failed = run.results.filter((r) => r.state === 'failed');
    say(
      `suite ended (exit ${run.exitCode}) after ${clock(run.durationMs)}: ` +
        `${run.results.filter((r) => r.state === 'passed').length} passed, ${failed.length} failed, ` +
        `${run.results.filter((r) => r.state === 'skipped').length} skipped of ${run.tally.total}`,
    );
    for (const f of failed) say(`  FAILED ${f.name}\n         ${f.why ?? ''}`);
    if (run.results.length === 0) say(`no JUnit report: see ${run.logFile}`);
    if (o.report !== '-' && run.results.length > 0) {
      // As a shell would need it typed: arguments with spaces or regex characters single-quoted.
      const args = process.argv
        .slice(2)
        .map((a) => (/^[\w./=-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`));
      const md = renderMarkdown(
        {
          kubernetesVersion: version,
          date: new Date(t0),
          machine: machine(),
          durationMs: run.durationMs,
          focus: o.focus,
          skip,
          parallel: o.parallel,
          selected: run.tally.total,
          command: `npm run conformance${args.length ? ` -- ${args.join(' ')}` : ''}`,
        },
        run.results,
        DESIGN_SKIPS,
      );
      await writeFile(o.report, md);
      say(`wrote ${o.report}`);
    }
    exitCode = run.exitCode === 0 && failed.length === 0 && run.results.length > 0 ? 0 : 1;
  } finally {
    if (o.keep && !interrupted) {
      say(`--keep: tenant kubeconfig ${tenant.kubeconfig}; Ctrl-C to remove everything`);
      await new Promise<void>((r) => process.once('SIGINT', () => r()));
    }
    await tenant.remove();
    // The suite's scratch files are kept only when something failed (its log says why).
    if (exitCode === 0) await rm(outDir, { recursive: true, force: true });
    else say(`suite output kept in ${outDir}`);
  }
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    say(`conformance: ${(e as Error).message}`);
    process.exit(1);
  },
);
