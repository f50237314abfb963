/**
 * The main job, as a user runs it: `kosmos-vc up` with nothing configured starts the embedded
 * default (host cluster with kwok nodes, Temporal dev server with its Web UI, operator); a
 * tenant created with kubectl works; Ctrl-C stops every process; a second start brings the
 * tenant back with its data.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { repoRoot } from '../../src/runtime/binaries.js';
import { OPERATOR_NODE_ENV, OPERATOR_NODE_FLAGS } from '../../src/runtime/nodeFlags.js';
import { PortAllocator, canBind } from '../../src/runtime/ports.js';
import {
  createNamespace,
  createVirtualCluster,
  deleteVirtualCluster,
  eventually,
  kubectl,
  newStateDir,
  processesMentioning,
  waitForGone,
  waitForPhase,
} from '../support/harness.js';

const entry = join(repoRoot(), 'dist', 'src', 'cli', 'main.js');
let stateDir: string;
let temporalPort: number;
let uiPort: number;
let current: ChildProcess | undefined;

interface Up {
  child: ChildProcess;
  kubeconfig: string;
}

async function up(): Promise<Up> {
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`npm run build\` (npm test does)`);
  // As the kosmos-vc command starts itself (its shebang).
  const env: NodeJS.ProcessEnv = {
    ...OPERATOR_NODE_ENV,
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    KOSMOS_VC_STATE_DIR: stateDir,
    KOSMOS_VC_TEMPORAL_PORT: String(temporalPort),
    KOSMOS_VC_TEMPORAL_UI_PORT: String(uiPort),
    LOG_FORMAT: 'json',
  };
  const child = spawn(process.execPath, [...OPERATOR_NODE_FLAGS, entry, 'up'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  current = child;
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const kubeconfig = await eventually(
    '`kosmos-vc up` to print its summary',
    () => {
      if (child.exitCode !== null)
        throw new Error(`up exited with ${child.exitCode}: ${stderr.slice(-2000)}`);
      return /export KUBECONFIG=(\S+)/.exec(stdout)?.[1];
    },
    180_000,
  );
  expect(stdout).toContain(`Temporal Web UI: http://127.0.0.1:${uiPort}`);
  return { child, kubeconfig };
}

async function interrupt(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGINT');
  return exited;
}

beforeAll(async () => {
  stateDir = await newStateDir();
  const ports = new PortAllocator(join(stateDir, 'test-ports.json'));
  for (;;) {
    const [p, u] = (await ports.allocate(`up-${Math.random()}`, 2)) as [number, number];
    if (await canBind(p + 10)) {
      temporalPort = p;
      uiPort = u;
      break;
    }
  }
});
afterAll(async () => {
  if (current) await interrupt(current);
});

describe('kosmos-vc up (embedded default)', () => {
  it('runs a tenant, stops everything on Ctrl-C and brings the tenant back on the next start', async () => {
    const first = await up();
    const nodes = await eventually('three Ready kwok nodes', async () => {
      const out = await kubectl(first.kubeconfig, 'get', 'nodes', '--no-headers');
      return out.split('\n').filter((l) => /\sReady\s/.test(l)).length === 3 ? out : undefined;
    });
    expect(nodes).toContain('kwok-node-0');
    const ui = await fetch(`http://127.0.0.1:${uiPort}/`);
    expect(ui.status).toBe(200);

    await kubectl(first.kubeconfig, 'apply', '-f', join(repoRoot(), 'examples', 'tenant1.yaml'));
    await kubectl(
      first.kubeconfig,
      'wait',
      'vc/tenant1',
      '--for=jsonpath={.status.phase}=Ready',
      '--timeout=120s',
    );
    const tenantKubeconfig = join(stateDir, 'tenant1.kubeconfig');
    const b64 = await kubectl(first.kubeconfig, 'get', 'vc', 'tenant1', '-o', 'jsonpath={.spec.kubeconfig}');
    await writeFile(tenantKubeconfig, Buffer.from(b64, 'base64'), { mode: 0o600 });
    await kubectl(tenantKubeconfig, 'create', 'namespace', 'kept-across-restarts');

    expect(await interrupt(first.child)).toBe(0);
    expect(processesMentioning(stateDir)).toEqual([]);

    const second = await up();
    await kubectl(
      second.kubeconfig,
      'wait',
      'vc/tenant1',
      '--for=jsonpath={.status.phase}=Ready',
      '--timeout=60s',
    );
    const ns = await eventually('the tenant apiserver back with its data', () =>
      kubectl(tenantKubeconfig, 'get', 'namespace', 'kept-across-restarts', '-o', 'name'),
    );
    expect(ns.trim()).toBe('namespace/kept-across-restarts');

    await kubectl(second.kubeconfig, 'delete', 'vc', 'tenant1', '--timeout=60s');
    expect(await interrupt(second.child)).toBe(0);
    expect(processesMentioning(stateDir)).toEqual([]);
    expect(readdirSync(join(stateDir, 'tenants'))).toEqual([]);
  });

  it('serves a given cluster and Temporal service instead of embedded ones', async () => {
    const namespace = await createNamespace('external');
    const external = await newStateDir();
    const env: NodeJS.ProcessEnv = {
      ...OPERATOR_NODE_ENV,
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      KUBECONFIG: inject('hostKubeconfig'),
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      KOSMOS_VC_STATE_DIR: external,
      KOSMOS_VC_TASK_QUEUE: `external-${namespace}`,
      KOSMOS_VC_WATCH_NAMESPACE: namespace,
      LOG_FORMAT: 'json',
    };
    const child = spawn(process.execPath, [...OPERATOR_NODE_FLAGS, entry, 'up'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    current = child;
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    await eventually('`kosmos-vc up` to print its summary', () => stdout.includes('kosmos-vc is up'), 60_000);
    expect(stdout).toContain(`export KUBECONFIG=${inject('hostKubeconfig')}`);
    expect(stdout).not.toContain('Temporal Web UI');
    expect(existsSync(join(external, 'host'))).toBe(false);

    await createVirtualCluster(namespace, 'outside');
    await waitForPhase(namespace, 'outside', 'Ready');
    await deleteVirtualCluster(namespace, 'outside');
    await waitForGone(namespace, 'outside');
    expect(await interrupt(child)).toBe(0);
    expect(processesMentioning(external)).toEqual([]);
  });
});
