/**
 * The kosmos-vc command line: commander's parsing (help on every command, usage errors, what
 * each command is handed) and the pure formatting of get/describe/kubeconfig.
 */
import { CommanderError } from 'commander';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { VirtualCluster } from '../../src/api/virtualCluster.js';
import {
  CommandError,
  age,
  describe as describeVc,
  kubeconfigText,
  memory,
  table,
} from '../../src/cli/inspect.js';
import { buildProgram, type Handlers } from '../../src/cli/program.js';
import { UsageError, parseTarget, resizeOutcome } from '../../src/cli/resize.js';
import { readOperatorEnv } from '../../src/worker/config.js';

const COMMANDS = [
  'up',
  'worker',
  'resize',
  'get',
  'describe',
  'kubeconfig',
  'rotate-ca',
  'backup',
  'restore',
];
/** The handler a command calls (commander names are kebab-case). */
const handlerOf = (c: string) => (c === 'rotate-ca' ? 'rotateCA' : c);

function harness() {
  const calls: [string, unknown][] = [];
  const out: string[] = [];
  const err: string[] = [];
  const record =
    (name: string) =>
    (o?: unknown): Promise<void> => {
      calls.push([name, o]);
      return Promise.resolve();
    };
  const handlers = Object.fromEntries(
    COMMANDS.map((c) => [handlerOf(c), record(handlerOf(c))]),
  ) as unknown as Handlers;
  const run = async (...argv: string[]) => {
    const program = buildProgram(handlers, {
      exitOverride: true,
      out: (s) => out.push(s),
      err: (s) => err.push(s),
    });
    await program.parseAsync(argv, { from: 'user' });
  };
  return { calls, out, err, run };
}

describe('kosmos-vc command line', () => {
  it('has --help on the program and every command, listing them all', async () => {
    const h = harness();
    await expect(h.run('--help')).rejects.toMatchObject({ exitCode: 0, code: 'commander.helpDisplayed' });
    for (const c of COMMANDS) expect(h.out.join('')).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
    for (const c of COMMANDS) {
      h.out.length = 0;
      await expect(h.run(c, '--help')).rejects.toMatchObject({ exitCode: 0 });
      expect(h.out.join('')).toContain(`Usage: kosmos-vc ${c}`);
    }
    expect(h.calls).toEqual([]);
  });

  it('hands each command what was typed', async () => {
    const h = harness();
    await h.run('get', '-A');
    await h.run('get', 'team/vc1', '--kubeconfig', '/k');
    await h.run('describe', 'vc1', '-n', 'team');
    await h.run('kubeconfig', 'vc1', '--namespace', 'team');
    await h.run('resize', 'team/vc1', '--add-node', 'a', '--add-node', 'b', '--cpu', '4');
    await h.run('rotate-ca', 'team/vc1', '--timeout', '0');
    await h.run('backup', 'vc1', '-n', 'team', '--to', '/tmp/b.tar.gz');
    await h.run('restore', 'team/copy', '--from', '/tmp/b.tar.gz');
    await h.run('up');
    expect(h.calls).toEqual([
      ['get', expect.objectContaining({ allNamespaces: true })],
      ['get', expect.objectContaining({ target: 'team/vc1', kubeconfig: '/k' })],
      ['describe', expect.objectContaining({ target: 'vc1', namespace: 'team' })],
      ['kubeconfig', expect.objectContaining({ target: 'vc1', namespace: 'team' })],
      [
        'resize',
        expect.objectContaining({
          namespace: 'team',
          name: 'vc1',
          add: ['a', 'b'],
          cpu: '4',
          noResources: false,
        }),
      ],
      ['rotateCA', expect.objectContaining({ target: 'team/vc1', timeout: '0' })],
      ['backup', expect.objectContaining({ target: 'vc1', namespace: 'team', to: '/tmp/b.tar.gz' })],
      ['restore', expect.objectContaining({ name: 'team/copy', from: '/tmp/b.tar.gz' })],
      ['up', undefined],
    ]);
  });

  it('refuses unknown commands and options and missing arguments, saying so', async () => {
    const h = harness();
    for (const argv of [
      ['bogus'],
      ['get', '--bogus'],
      ['describe'],
      ['kubeconfig'],
      ['resize'],
      ['rotate-ca'],
    ]) {
      h.err.length = 0;
      const e: unknown = await h.run(...argv).catch((x: unknown) => x);
      expect(e, argv.join(' ')).toBeInstanceOf(CommanderError);
      expect((e as CommanderError).exitCode).not.toBe(0);
      expect(h.err.join('')).toMatch(/error: /);
    }
    // Our own checks are usage errors too.
    await expect(h.run('resize', 'vc', '--cpu', '2', '--no-resources')).rejects.toThrow(UsageError);
    await expect(h.run('resize', 'vc', '--timeout', 'soon')).rejects.toThrow(/--timeout/);
    expect(h.calls).toEqual([]);
  });
});

const vc = (status: Record<string, unknown>, spec: Record<string, unknown> = {}): VirtualCluster =>
  VirtualCluster.parse({
    apiVersion: 'kosmos.io/v1alpha1',
    kind: 'VirtualCluster',
    metadata: { name: 'vc1', namespace: 'team', uid: '11111111-2222-3333-4444-555555555555', generation: 2 },
    spec: { promoteResources: { nodes: ['node-a'], resources: { cpu: '500m', memory: '8Gi' } }, ...spec },
    status,
  });

describe('the entry point', () => {
  // client-node 2 fails at import on Node.js 20 with a TypeError from undici: main.ts checks the
  // version before it loads anything. Node runs main.ts itself (type stripping, Node >= 22.18).
  it.each(['20.20.2', '22.18.0', '23.5.0'])(
    'refuses Node.js %s with an error that says what to do',
    (version) => {
      const fake = `Object.defineProperty(process.versions, "node", { value: "${version}" })`;
      const r = spawnSync(
        process.execPath,
        ['--import', `data:text/javascript,${encodeURIComponent(fake)}`, 'src/cli/main.ts', 'get'],
        { encoding: 'utf8' },
      );
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`kosmos-vc needs Node.js 22.19 or newer (not 23); this is ${version}`);
      expect(r.stderr).toContain('npx kosmos-vc');
    },
  );
});

describe('get, describe, kubeconfig', () => {
  const now = new Date('2026-12-03T12:00:00Z');
  const ready = vc({
    phase: 'Ready',
    reason: 'Ready',
    message: 'serving',
    observedGeneration: 2,
    apiServerEndpoint: 'https://127.0.0.1:6443',
    workflowId: 'virtualcluster/team/vc1/uid',
    kubeconfigSecretRef: { name: 'vc1-kubeconfig', key: 'kubeconfig' },
    promoted: { nodes: ['node-a'], nodeCount: 1, cpu: '2500m', memory: '33761050624', pending: [] },
    conditions: [
      {
        type: 'Ready',
        status: 'True',
        reason: 'Ready',
        message: 'serving',
        lastTransitionTime: '2026-12-03T11:58:00Z',
      },
    ],
  });

  it('prints kubectl-style ages and memory', () => {
    expect(age('2026-12-03T11:59:15Z', now)).toBe('45s');
    expect(age('2026-12-03T11:56:40Z', now)).toBe('3m20s');
    expect(age('2026-12-03T07:00:00Z', now)).toBe('5h');
    expect(age('2026-11-30T09:00:00Z', now)).toBe('3d3h');
    expect(age(undefined, now)).toBe('<unknown>');
    expect(memory('33761050624')).toBe('31.4Gi');
    expect(memory('8589934592')).toBe('8Gi');
    expect(memory('4Gi')).toBe('4Gi');
    expect(memory(undefined)).toBe('0');
  });

  it('lists VirtualClusters in aligned columns, with the namespace for -A', () => {
    const created = '2026-12-03T11:50:00Z';
    const text = table([{ vc: ready, created }, { vc: vc({}) }], true, now);
    const [head, first, second] = text.split('\n');
    expect(head).toMatch(/^NAMESPACE\s+NAME\s+PHASE\s+NODES\s+CPU\s+MEMORY\s+ENDPOINT\s+AGE$/);
    expect(first).toMatch(/^team\s+vc1\s+Ready\s+1\s+2500m\s+31\.4Gi\s+https:\/\/127\.0\.0\.1:6443\s+10m$/);
    expect(second).toMatch(/^team\s+vc1\s+Pending\s+0\s+0\s+0\s+<none>\s+<unknown>$/);
    // Columns line up: every row's PHASE starts where the header's does.
    expect(first!.indexOf('Ready')).toBe(head!.indexOf('PHASE'));
    expect(table([], false, now)).toBe('No VirtualClusters found.');
  });

  it('describes one in full', () => {
    const text = describeVc({ vc: ready, created: '2026-12-03T11:50:00Z' }, now);
    expect(text).toContain('Phase:            Ready');
    expect(text).toContain('Workflow:         virtualcluster/team/vc1/uid');
    expect(text).toContain('kosmos-vc kubeconfig team/vc1');
    expect(text).toMatch(/Host namespace:\s+kvc-team-vc1-[0-9a-f]{10}/);
    expect(text).toMatch(/Requested:\n {2}Nodes:\s+node-a\n {2}Resources:\s+cpu 500m, memory 8Gi/);
    expect(text).toMatch(/Promoted:\n {2}Nodes:\s+node-a\n {2}Resources:\s+cpu 2500m, memory 31\.4Gi/);
    expect(text).toMatch(/Ready\s+True\s+Ready\s+2m\s+serving/);
    expect(text).not.toContain('Certificates:');
    const rotating = vc({
      phase: 'Ready',
      certificates: {
        notAfter: '2027-12-03T11:00:00.000Z',
        renewAt: '2027-11-03T11:00:00.000Z',
        caNotAfter: '2036-12-01T11:00:00.000Z',
        caFingerprint: 'aaaa',
        caRotation: 1,
        previousCAFingerprint: 'bbbb',
        previousCARetiresAt: '2026-12-04T11:00:00.000Z',
      },
    });
    expect(describeVc({ vc: rotating }, now)).toMatch(
      /Certificates:\n {2}Valid until:\s+2027-12-03T11:00:00.000Z \(renewed from 2027-11-03T11:00:00.000Z; lifetime 8760h\)\n {2}CA:\s+aaaa, valid until 2036-12-01T11:00:00.000Z \(rotation 1\)\n {2}Previous CA:\s+bbbb, trusted until 2026-12-04T11:00:00.000Z/,
    );
  });

  it('prints the kubeconfig decoded, and says why there is none yet', () => {
    const yaml = 'apiVersion: v1\nkind: Config\n';
    expect(kubeconfigText(vc({ phase: 'Ready' }, { kubeconfig: Buffer.from(yaml).toString('base64') }))).toBe(
      yaml,
    );
    expect(() => kubeconfigText(vc({ phase: 'Preparing' }))).toThrow(/no kubeconfig yet \(phase Preparing\)/);
    expect(() => kubeconfigText(vc({ phase: 'Preparing' }))).toThrow(CommandError);
  });

  it('reads [namespace/]name, with -n as the default namespace', () => {
    expect(parseTarget('vc1', undefined)).toEqual({ namespace: 'default', name: 'vc1' });
    expect(parseTarget('vc1', 'team')).toEqual({ namespace: 'team', name: 'vc1' });
    expect(parseTarget('team/vc1', undefined)).toEqual({ namespace: 'team', name: 'vc1' });
    expect(() => parseTarget('a/b/c', undefined)).toThrow(UsageError);
    expect(() => parseTarget('team/vc1', 'other')).toThrow(/--namespace says other/);
  });
});

describe('operator environment', () => {
  it('reads the workflow cache, and refuses what the worker cannot take', () => {
    expect(readOperatorEnv({ KOSMOS_VC_WORKFLOW_CACHE: '32' }).KOSMOS_VC_WORKFLOW_CACHE).toBe(32);
    expect(readOperatorEnv({}).KOSMOS_VC_WORKFLOW_CACHE).toBeUndefined();
    // The Temporal SDK takes a cache of 0 (off) or at least 2.
    expect(readOperatorEnv({ KOSMOS_VC_WORKFLOW_CACHE: '0' }).KOSMOS_VC_WORKFLOW_CACHE).toBe(0);
    expect(() => readOperatorEnv({ KOSMOS_VC_WORKFLOW_CACHE: '1' })).toThrow(/KOSMOS_VC_WORKFLOW_CACHE/);
    expect(() => readOperatorEnv({ KOSMOS_VC_WORKFLOW_CACHE: 'many' })).toThrow(/KOSMOS_VC_WORKFLOW_CACHE/);
  });

  it("reads the pods' images by component (the chart's), and refuses a component it does not run", () => {
    expect(
      readOperatorEnv({
        KOSMOS_VC_IMAGES:
          'kube-apiserver=registry.k8s.io/kube-apiserver:v1.37.2,clustertree=localhost/kosmos-vc/operator:0123',
      }).KOSMOS_VC_IMAGES,
    ).toEqual({
      'kube-apiserver': 'registry.k8s.io/kube-apiserver:v1.37.2',
      clustertree: 'localhost/kosmos-vc/operator:0123',
    });
    expect(readOperatorEnv({}).KOSMOS_VC_IMAGES).toBeUndefined();
    expect(() => readOperatorEnv({ KOSMOS_VC_IMAGES: 'kubelet=registry.k8s.io/kubelet:v1' })).toThrow(
      /KOSMOS_VC_IMAGES names components of etcd, kube-apiserver/,
    );
    expect(() => readOperatorEnv({ KOSMOS_VC_IMAGES: 'etcd' })).toThrow(/component=image/);
  });

  it('leaves KOSMOS_VC_ONE_PROCESS to the operator when absent (its default: one process)', () => {
    expect(readOperatorEnv({}).KOSMOS_VC_ONE_PROCESS).toBeUndefined();
    expect(readOperatorEnv({ KOSMOS_VC_ONE_PROCESS: 'false' }).KOSMOS_VC_ONE_PROCESS).toBe(false);
    expect(readOperatorEnv({ KOSMOS_VC_ONE_PROCESS: 'true' }).KOSMOS_VC_ONE_PROCESS).toBe(true);
    expect(() => readOperatorEnv({ KOSMOS_VC_ONE_PROCESS: 'yes' })).toThrow(/KOSMOS_VC_ONE_PROCESS/);
  });

  it('reads the exposures a tenant API server may have beside ClusterIP', () => {
    expect(readOperatorEnv({ KOSMOS_VC_EXPOSE_TYPES: 'NodePort' }).KOSMOS_VC_EXPOSE_TYPES).toEqual([
      'NodePort',
    ]);
    expect(readOperatorEnv({ KOSMOS_VC_EXPOSE_TYPES: '' }).KOSMOS_VC_EXPOSE_TYPES).toEqual([]);
    expect(readOperatorEnv({}).KOSMOS_VC_EXPOSE_TYPES).toBeUndefined();
    expect(() => readOperatorEnv({ KOSMOS_VC_EXPOSE_TYPES: 'ClusterIP,Ingress' })).toThrow(
      /KOSMOS_VC_EXPOSE_TYPES lists NodePort, LoadBalancer/,
    );
  });
});

describe('kosmos-vc resize, following the change', () => {
  const at = (status: Record<string, unknown>) =>
    ({
      metadata: { name: 'vc1', namespace: 'team' },
      spec: {},
      status: { observedGeneration: 4, conditions: [], ...status },
    }) as unknown as VirtualCluster;
  const promoted = { type: 'NodesPromoted', status: 'True', reason: 'Promoted', message: '' };

  it('waits until the generation is observed and the work on it has ended', () => {
    expect(resizeOutcome(at({ phase: 'Ready', observedGeneration: 3 }), 4, 1)).toBeUndefined();
    expect(resizeOutcome(at({ phase: 'Ready', reason: 'Resizing' }), 4, 1)).toBeUndefined();
    expect(resizeOutcome(at({ phase: 'Sleeping', reason: 'Waking' }), 4, 1)).toBeUndefined();
    // A Failed tenant's spec change provisions it again: not done until it is Ready (or Failed).
    for (const phase of ['Pending', 'Preparing', 'Initialized'])
      expect(resizeOutcome(at({ phase, reason: 'Provisioning' }), 4, 1)).toBeUndefined();
  });

  it('ends with the exit code the outcome asks for', () => {
    const done = resizeOutcome(at({ phase: 'Ready', reason: 'Promoted', conditions: [promoted] }), 4, 2);
    expect(done?.code).toBe(0);
    expect(done?.message).toMatch(/^done in 2s: 0 node\(s\)/);
    expect(resizeOutcome(at({ phase: 'Ready', reason: 'Promoted' }), 4, 2)?.code).toBe(3);
    expect(resizeOutcome(at({ phase: 'Failed', reason: 'ComponentExited', message: 'x' }), 4, 2)).toEqual({
      code: 1,
      message: 'resize failed: x',
    });
    expect(resizeOutcome(at({ phase: 'Ready', reason: 'ResizeFailed', message: 'y' }), 4, 2)?.code).toBe(1);
    expect(resizeOutcome(at({ phase: 'Sleeping', reason: 'Asleep' }), 4, 2)?.code).toBe(0);
    // Asleep for idleness, the change wakes it: not done before it is up (unless no wake is
    // expected: nothing changed, or none came within WAKE_GRACE_MS).
    expect(resizeOutcome(at({ phase: 'Sleeping', reason: 'Idle' }), 4, 2)).toBeUndefined();
    expect(resizeOutcome(at({ phase: 'Sleeping', reason: 'SleepFailed' }), 4, 2)).toBeUndefined();
    expect(resizeOutcome(at({ phase: 'Sleeping', reason: 'Idle' }), 4, 2, false)?.code).toBe(0);
    // Asked to sleep by its spec as well: no wake comes.
    const asked = at({ phase: 'Sleeping', reason: 'Idle' });
    asked.spec.sleep = true;
    expect(resizeOutcome(asked, 4, 2)?.code).toBe(0);
    expect(resizeOutcome(at({ phase: 'Sleeping', reason: 'WakeFailed', message: 'z' }), 4, 2)?.code).toBe(1);
  });
});
