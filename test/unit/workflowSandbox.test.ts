/**
 * Workflow code runs in Temporal's deterministic sandbox. Lint forbids the imports that break
 * it; this test checks the same from the files themselves, so the rule cannot silently go.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const dir = fileURLToPath(new URL('../../src/workflows/', import.meta.url));
// ../api/duration.js and ../api/defaults.js: a pure function and constants (no zod, no Node
// built-in), shared with the API schemas; fast-deep-equal: a pure function of its arguments.
const allowed = [
  /^@temporalio\/(workflow|common)(\/|$)/,
  /^\.\/.+\.js$/,
  /^\.\.\/api\/(duration|defaults)\.js$/,
  /^fast-deep-equal$/,
];
const typeOnlyAllowed = [/^\.\.\/(api|activities)\/.+\.js$/];

it('workflow modules import only the workflow SDK, each other, types, and pure modules named above', async () => {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.ts'));
  expect(files.length).toBeGreaterThan(0);
  const offenders: string[] = [];
  for (const f of files) {
    const text = await readFile(join(dir, f), 'utf8');
    for (const m of text.matchAll(/^import\s+(type\s+)?[^'"]*from\s+'([^']+)'/gm)) {
      const [, typeOnly, from] = m as unknown as [string, string | undefined, string];
      if (allowed.some((r) => r.test(from))) continue;
      if (typeOnly && typeOnlyAllowed.some((r) => r.test(from))) continue;
      offenders.push(`${f}: ${m[0]}`);
    }
  }
  expect(offenders).toEqual([]);
});
