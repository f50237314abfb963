/**
 * The V8 flags and malloc setting of kosmos-vc's Node.js processes (ADR 12, decision 12): every
 * way of starting the operator passes them, and on the Node.js the project runs the flags cap the
 * young generation. clusterTree's specs carry its flags (integration tests read a running
 * clusterTree's command line and its pod's arguments).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/runtime/binaries.js';
import {
  CLUSTERTREE_NODE_FLAGS,
  OPERATOR_NODE_ENV,
  OPERATOR_NODE_FLAGS,
} from '../../src/runtime/nodeFlags.js';

const read = (...path: string[]): string => readFileSync(join(repoRoot(), ...path), 'utf8');
const ENV = Object.entries(OPERATOR_NODE_ENV).map(([k, v]) => `${k}=${v}`);

/** The environment and the options `node` is given in a command line, before the script it runs. */
function nodeCommand(command: string, script: string): { env: string[]; flags: string[] } {
  const words = command.split('&&').at(-1)!.trim().split(/\s+/);
  const node = words.indexOf('node');
  const at = words.findIndex((w) => w.includes(script));
  expect(node, `node, then ${script}, in: ${command}`).toBeGreaterThanOrEqual(0);
  expect(at).toBeGreaterThan(node);
  return { env: words.slice(0, node), flags: words.slice(node + 1, at) };
}

describe('the operator is started with its V8 flags and malloc setting', () => {
  const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;

  it.each([
    ['start', 'dist/src/cli/main.js'],
    ['bench', 'dist/bench/main.js'],
    ['bench:clustertree', 'dist/bench/clustertree.js'],
    ['bench:workloads', 'dist/bench/workloads.js'],
    ['conformance', 'dist/src/conformance/main.js'],
  ])('npm run %s', (name, script) => {
    const { env, flags } = nodeCommand(scripts[name]!, script);
    expect(env).toEqual(ENV);
    // The last of a repeated V8 flag is the one that counts.
    const last = (f: readonly string[]) => f.findLast((x) => x.startsWith('--max-semi-space-size='));
    expect(last(flags)).toBe(last(OPERATOR_NODE_FLAGS));
  });

  it("the kosmos-vc command's shebang", () => {
    const shebang = read('src', 'cli', 'main.ts').split('\n')[0]!;
    expect(shebang).toBe(`#!/usr/bin/env -S ${[...ENV, 'node', ...OPERATOR_NODE_FLAGS].join(' ')}`);
  });

  it("the chart's operator: the image's entry point and the Deployment's environment", () => {
    const entry = /^\s+--entrypoint '(\[[^']*\])'/m.exec(read('scripts', 'image.sh'))?.[1];
    expect(JSON.parse(entry!)).toEqual([
      '/usr/local/bin/node',
      ...OPERATOR_NODE_FLAGS,
      '/app/dist/src/cli/main.js',
    ]);
    const deployment = read('deploy', 'helm', 'kosmos-vc', 'templates', 'deployment.yaml');
    for (const [name, value] of Object.entries(OPERATOR_NODE_ENV))
      expect(deployment).toMatch(new RegExp(`\\n\\s+- name: ${name}\\n\\s+value: "${value}"\\n`));
  });
});

/**
 * The new space a Node.js with these flags keeps after a burst of objects that live a little
 * while, in MiB.
 */
function newSpaceAfterLoad(flags: readonly string[]): number {
  const program = `
    let keep = [];
    for (let i = 0; i < 1e6; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 100000) keep = []; }
    keep = [];
    globalThis.gc();
    const s = require('node:v8').getHeapSpaceStatistics().find((x) => x.space_name === 'new_space');
    process.stdout.write(String(s.space_size / 2 ** 20));`;
  return Number(
    execFileSync(process.execPath, ['--expose-gc', ...flags, '-e', program], {
      encoding: 'utf8',
      timeout: 30_000,
    }),
  );
}

describe('the flags cap the young generation on this Node.js', () => {
  it('the burst grows the new space of a Node.js without them (Node.js 24: to 64 MiB)', () => {
    expect(newSpaceAfterLoad([])).toBeGreaterThan(4);
  });

  it.each([
    ['operator', OPERATOR_NODE_FLAGS],
    ['clusterTree', CLUSTERTREE_NODE_FLAGS],
  ])('%s: two semi-spaces of 2 MiB at most', (_, flags) => {
    expect(newSpaceAfterLoad(flags)).toBeLessThanOrEqual(4);
  });
});
