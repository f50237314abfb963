/**
 * The result of a conformance run: the suite's JUnit report read back, counted per SIG, and
 * written as docs/conformance.md (what a reader of the project wants to know about it).
 */
import { XMLParser } from 'fast-xml-parser';
import type { SpecState } from './progress.js';

export interface SpecResult {
  name: string;
  sig: string;
  state: SpecState;
  seconds: number;
  /** Why it failed or was skipped: the first line of the suite's message. */
  why?: string | undefined;
}

type JUnitMessage = { '@_message'?: string; '#text'?: string } | string;

interface JUnitCase {
  '@_name': string;
  '@_status'?: string;
  '@_time'?: string;
  failure?: JUnitMessage;
  skipped?: JUnitMessage;
  error?: JUnitMessage;
}

const asArray = <T>(x: T | T[] | undefined): T[] => (x === undefined ? [] : Array.isArray(x) ? x : [x]);
/** The message attribute, or the element's text where the suite leaves the attribute empty. */
const messageOf = (x: JUnitMessage | undefined): string | undefined =>
  typeof x === 'string' ? x : x?.['@_message'] || x?.['#text'];

/**
 * The first meaningful line of a Ginkgo message, trimmed for a table cell. A Gomega assertion
 * ("Expected", the actual value over several lines, "to contain substring", the expected one)
 * becomes one line: the actual value cut short, then the expectation and the first line of its
 * expected value.
 */
export function oneLine(message: string | undefined): string | undefined {
  const lines = (message ?? '')
    .split('\n')
    .map((l) => l.trim().replace(/^\[FAILED\]\s*/, ''))
    .filter((l) => l.length > 0);
  const first = lines[0];
  if (first === undefined) return undefined;
  const cut = (t: string, n: number) => (t.length > n ? `${t.slice(0, n - 3)}...` : t);
  const flat = (ls: string[]) => ls.join(' ').replace(/\s+/g, ' ');
  const to = lines.findIndex((l, i) => i > 1 && /^(not )?to /.test(l));
  if (first === 'Expected' && to > 1) {
    // "to contain substring" has its expected value on the next line; "to be true" none.
    const expected = lines[to + 1]?.startsWith('<') ? [lines[to + 1]!] : [];
    const expectation = flat([lines[to]!, ...expected]);
    return cut(`Expected ${cut(flat(lines.slice(1, to)), 80)} ${expectation}`, 200);
  }
  return cut(first.replace(/\s+/g, ' '), 200);
}

/** The spec's SIG: its first `[sig-...]` tag. */
export const sigOf = (name: string): string => /\[(sig-[a-z0-9-]+)\]/.exec(name)?.[1] ?? 'other';

/**
 * Every spec the run selected, from Ginkgo's JUnit report. Specs the focus filtered out appear
 * there as skipped with the bare message "skipped"; a spec that skipped itself at run time says
 * why ("skipped - <reason>") and counts.
 */
export function parseJUnit(xml: string): SpecResult[] {
  const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', htmlEntities: true }).parse(
    xml,
  ) as {
    testsuites?: {
      testsuite?: { testcase?: JUnitCase | JUnitCase[] } | { testcase?: JUnitCase | JUnitCase[] }[];
    };
  };
  const results: SpecResult[] = [];
  for (const suite of asArray(doc.testsuites?.testsuite)) {
    for (const c of asArray(suite.testcase)) {
      const name = c['@_name'].replace(/^\[It\]\s*/, '');
      // Suite-level nodes ([SynchronizedBeforeSuite], [ReportAfterSuite], ...) are not specs,
      // but a failure of one fails the run: keep those.
      const suiteNode = /^\[\w*(Suite)\]/.test(c['@_name']);
      const status = c['@_status'] ?? (c.failure || c.error ? 'failed' : c.skipped ? 'skipped' : 'passed');
      if (status === 'skipped') {
        const message = messageOf(c.skipped);
        if (!message || message.trim() === 'skipped' || suiteNode) continue;
        results.push({
          name,
          sig: sigOf(name),
          state: 'skipped',
          seconds: Number(c['@_time'] ?? 0),
          why: oneLine(message.replace(/^skipped - /, '')),
        });
        continue;
      }
      if (suiteNode && status === 'passed') continue;
      const state: SpecState = status === 'passed' ? 'passed' : 'failed';
      results.push({
        name,
        sig: sigOf(name),
        state,
        seconds: Number(c['@_time'] ?? 0),
        ...(state === 'failed' ? { why: oneLine(messageOf(c.failure) ?? messageOf(c.error)) ?? status } : {}),
      });
    }
  }
  return results;
}

export interface SigCount {
  sig: string;
  passed: number;
  failed: number;
  skipped: number;
}

export function countBySig(results: SpecResult[]): SigCount[] {
  const by = new Map<string, SigCount>();
  for (const r of results) {
    const c = by.get(r.sig) ?? { sig: r.sig, passed: 0, failed: 0, skipped: 0 };
    c[r.state]++;
    by.set(r.sig, c);
  }
  return [...by.values()].sort((a, b) => a.sig.localeCompare(b.sig));
}

export interface RunFacts {
  kubernetesVersion: string;
  date: Date;
  machine: string;
  durationMs: number;
  focus: string;
  skip: string;
  parallel: number;
  /** Specs the focus selected (Ginkgo's "Will run N"). */
  selected: number;
  command: string;
}

export interface DesignSkip {
  pattern: string;
  reason: string;
}

/** Text for a Markdown table cell: no column breaks, and no `<string>` read as an HTML tag. */
const cell = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\|/g, '\\|');
/** Specs and why, as a table; "None." when there are none. */
const whyTable = (results: SpecResult[]): string[] =>
  results.length === 0
    ? ['None.']
    : [
        '| test | why |',
        '| --- | --- |',
        ...results.map((r) => `| ${cell(r.name)} | ${cell(r.why ?? '')} |`),
      ];
const minutes = (ms: number): string => `${Math.round(ms / 60_000)} min`;

export function renderMarkdown(
  facts: RunFacts,
  results: SpecResult[],
  designSkips: readonly DesignSkip[],
): string {
  const sigs = countBySig(results);
  const total = (k: keyof Omit<SigCount, 'sig'>): number => sigs.reduce((n, s) => n + s[k], 0);
  const failed = results.filter((r) => r.state === 'failed');
  const skipped = results.filter((r) => r.state === 'skipped');
  const notRun = Math.max(0, facts.selected - results.length);
  const lines = [
    '# Conformance',
    '',
    `The upstream Kubernetes conformance suite (\`e2e.test\` of ${facts.kubernetesVersion}, its`,
    '`[Conformance]` specs) run against a kosmos-vc tenant by `npm run conformance`; this file is',
    "written by that run. The tenant promotes the embedded host's real node (ADR 8).",
    '',
    `- Kubernetes: ${facts.kubernetesVersion}`,
    `- Date: ${facts.date.toISOString().replace(/\.\d+Z$/, 'Z')}`,
    `- Machine: ${facts.machine}`,
    `- Duration: ${minutes(facts.durationMs)} (${facts.parallel === 1 ? 'serial' : `${facts.parallel} parallel processes`})`,
    `- Command: \`${facts.command}\``,
    `- Focus: \`${facts.focus}\``,
    `- Skip: \`${facts.skip || '(none)'}\``,
    '',
    `**${total('passed')} passed, ${total('failed')} failed, ${total('skipped')} skipped** of ${facts.selected} selected` +
      (notRun > 0 ? ` (${notRun} not run: the run ended before them)` : '') +
      '.',
    '',
    '| SIG | passed | failed | skipped |',
    '| --- | ---: | ---: | ---: |',
    ...sigs.map((s) => `| ${s.sig} | ${s.passed} | ${s.failed} | ${s.skipped} |`),
    `| **all** | **${total('passed')}** | **${total('failed')}** | **${total('skipped')}** |`,
    '',
    '## Failures',
    '',
    'Why each kind of failure happens, and what would fix it: `docs/adr/0008-conformance.md`.',
    '',
    ...whyTable(failed),
    '',
    '## Skipped by the suite itself',
    '',
    ...whyTable(skipped),
    '',
    '## Skipped by design',
    '',
    ...(designSkips.length === 0
      ? ['None: every `[Conformance]` spec is run.']
      : [
          '| skip regex | why a tenant cannot pass it |',
          '| --- | --- |',
          // (A code span shows entities as written: the pattern keeps its < and >.)
          ...designSkips.map((d) => `| \`${d.pattern.replace(/\|/g, '\\|')}\` | ${cell(d.reason)} |`),
        ]),
    '',
  ];
  return lines.join('\n');
}
