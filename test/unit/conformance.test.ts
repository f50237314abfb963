/**
 * The conformance harness reads Ginkgo's output and JUnit report correctly: progress counts each
 * finished spec once, the report keeps only the specs the focus selected, failures carry a
 * one-line reason, and the markdown has the per-SIG table and the design-skip list.
 */
import { describe, expect, it } from 'vitest';
import { ProgressParser, type SpecEvent } from '../../src/conformance/progress.js';
import { countBySig, oneLine, parseJUnit, renderMarkdown } from '../../src/conformance/report.js';
import { commandLine } from '../../src/conformance/suite.js';

const OUTPUT = `Running Suite: Kubernetes e2e suite - /tmp
Will run 3 of 3206 specs
------------------------------
[SynchronizedBeforeSuite] 
k8s.io/kubernetes@v1.37.2/test/e2e/e2e.go:69
[SynchronizedBeforeSuite] PASSED [0.100 seconds]
------------------------------
SSSSSSSSSS
------------------------------
[sig-api-machinery] ResourceQuota should manage the lifecycle of a ResourceQuota [Conformance] [sig-api-machinery, Conformance]
k8s.io/kubernetes@v1.37.2/test/e2e/apimachinery/resource_quota.go:946
  STEP: Creating a kubernetes client @ 12/02/26 15:00:01.000
• [2.345 seconds]
------------------------------
SSSS
------------------------------
[sig-network] DNS should provide DNS for the cluster [Conformance] [sig-network, Conformance]
k8s.io/kubernetes@v1.37.2/test/e2e/network/dns.go:55
  STEP: looking up names
  [FAILED] in [It] - dns.go:123 @ 12/02/26 15:00:31.000
• [FAILED] [30.021 seconds]
[sig-network] DNS
k8s.io/kubernetes@v1.37.2/test/e2e/network/common/framework.go:23
  [It] should provide DNS for the cluster [Conformance]
------------------------------
[sig-apps] Daemon set should rollback without unnecessary restarts [Conformance] [sig-apps, Conformance]
k8s.io/kubernetes@v1.37.2/test/e2e/apps/daemon_set.go:444
S [SKIPPED] [0.050 seconds]
------------------------------
[ReportAfterSuite] Kubernetes e2e suite report
[ReportAfterSuite] PASSED [0.010 seconds]
`;

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3206" disabled="0" errors="0" failures="1" time="33">
  <testsuite name="Kubernetes e2e suite" tests="3206" skipped="3204" failures="1" errors="0" time="33">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="0.1"></testcase>
    <testcase name="[It] [sig-api-machinery] ResourceQuota should manage the lifecycle of a ResourceQuota [Conformance]" classname="Kubernetes e2e suite" status="passed" time="2.345"></testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for the cluster [Conformance]" classname="Kubernetes e2e suite" status="failed" time="30.021">
      <failure message="" type="failed">[FAILED] Unable to read agnhost_udp@kubernetes.default.svc.cluster.local from pod dns-1234: the server is currently unable to handle the request&#xA;In [It] at: dns.go:123</failure>
    </testcase>
    <testcase name="[It] [sig-apps] Daemon set should rollback without unnecessary restarts [Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0.05">
      <skipped message="skipped - Requires at least 2 nodes (not 1)"></skipped>
    </testcase>
    <testcase name="[It] [sig-storage] CSI mock volume should do something" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
  </testsuite>
</testsuites>`;

describe('conformance progress', () => {
  it('reports each finished spec once, with its state, and keeps a running tally', () => {
    const events: SpecEvent[] = [];
    const p = new ProgressParser((e) => events.push(e));
    for (const line of OUTPUT.split('\n')) p.line(line);
    expect(p.tally.total).toBe(3);
    expect(events.map((e) => [e.state, e.seconds])).toEqual([
      ['passed', 2.345],
      ['failed', 30.021],
      ['skipped', 0.05],
    ]);
    expect(events[1]!.name).toMatch(/^\[sig-network\] DNS should provide DNS for the cluster/);
    expect(p.tally).toMatchObject({ passed: 1, failed: 1, skipped: 1 });
    expect(p.tally.failures).toHaveLength(1);
  });
});

const PARALLEL = `Will run 2 of 3206 specs
Running in parallel across 4 processes
------------------------------
• [46.172 seconds]
[sig-apps] CronJob should not schedule new jobs when ForbidConcurrent [Conformance] [Slow] [sig-apps, Slow, Conformance]
k8s.io/kubernetes@v1.37.2/test/e2e/apps/cronjob.go:127

  Timeline >>
  STEP: Creating a kubernetes client @ 12/02/26 15:06:14.656
  << Timeline
------------------------------
SSSS
------------------------------
• [FAILED] [3.100 seconds]
[sig-node] Pods should get a host IP [Conformance] [sig-node, Conformance]
k8s.io/kubernetes@v1.37.2/test/e2e/common/node/pods.go:205
------------------------------
[SynchronizedAfterSuite] PASSED [0.001 seconds]
`;

describe('conformance progress, parallel layout', () => {
  it('reads the result line before the spec text', () => {
    const events: SpecEvent[] = [];
    const p = new ProgressParser((e) => events.push(e));
    for (const line of PARALLEL.split('\n')) p.line(line);
    expect(events.map((e) => [e.state, e.name.slice(0, 20)])).toEqual([
      ['passed', '[sig-apps] CronJob s'],
      ['failed', '[sig-node] Pods shou'],
    ]);
    expect(p.tally).toMatchObject({ total: 2, passed: 1, failed: 1, skipped: 0 });
  });
});

describe('conformance report', () => {
  it('keeps the selected specs only, with a one-line reason for failures and skips', () => {
    const results = parseJUnit(JUNIT);
    expect(results.map((r) => [r.sig, r.state])).toEqual([
      ['sig-api-machinery', 'passed'],
      ['sig-network', 'failed'],
      ['sig-apps', 'skipped'],
    ]);
    expect(results[1]!.why).toBe(
      'Unable to read agnhost_udp@kubernetes.default.svc.cluster.local from pod dns-1234: the server is currently unable to handle the request',
    );
    expect(results[2]!.why).toBe('Requires at least 2 nodes (not 1)');
    expect(countBySig(results)).toEqual([
      { sig: 'sig-api-machinery', passed: 1, failed: 0, skipped: 0 },
      { sig: 'sig-apps', passed: 0, failed: 0, skipped: 1 },
      { sig: 'sig-network', passed: 0, failed: 1, skipped: 0 },
    ]);
  });

  it('writes counts per SIG, each failure with its reason, and the design skips', () => {
    const md = renderMarkdown(
      {
        kubernetesVersion: 'v1.37.2',
        date: new Date('2026-12-02T15:00:00Z'),
        machine: '2 cores',
        durationMs: 33_000,
        focus: '\\[Conformance\\]',
        skip: 'x',
        parallel: 1,
        selected: 4,
        command: 'npm run conformance',
      },
      parseJUnit(JUNIT),
      [{ pattern: 'x', reason: 'needs a <host> node' }],
    );
    expect(md).toContain('**1 passed, 1 failed, 1 skipped** of 4 selected (1 not run');
    expect(md).toContain('| sig-network | 0 | 1 | 0 |');
    expect(md).toContain('needs a &lt;host&gt; node'); // not an HTML tag in the table
    expect(md).toContain(
      '| [sig-network] DNS should provide DNS for the cluster [Conformance] | Unable to read',
    );
    expect(md).toContain('| `x` | needs a &lt;host&gt; node |');
  });

  it('cuts a long message to one line', () => {
    expect(oneLine('\n[FAILED] first   line\nsecond')).toBe('first line');
    expect(oneLine('x'.repeat(500))!.length).toBe(200);
    expect(oneLine(undefined)).toBeUndefined();
    // A Gomega assertion over several lines: the actual value cut short, the expectation whole.
    const gomega = [
      '[FAILED] Expected',
      '    <string>: PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
      '    NAME="Debian GNU/Linux"',
      '    ID=debian',
      'to contain substring',
      '    <string>: Alpine Linux',
      'In [It] at: k8s.io/kubernetes@v1.37.2/test/e2e/common/node/image_volume.go:87',
    ].join('\n');
    expect(oneLine('[FAILED] Expected\n    <bool>: false\nto be true\nIn [It] at: x.go:1')).toBe(
      'Expected <bool>: false to be true',
    );
    expect(oneLine(gomega)).toBe(
      'Expected <string>: PRETTY_NAME="Debian GNU/Linux 12 (bookworm)" NAME="Debian GNU/Linux... to contain substring <string>: Alpine Linux',
    );
  });
});

describe('conformance command line', () => {
  const base = { binaries: { e2eTest: '/c/e2e.test', ginkgo: '/c/ginkgo' }, kubeconfig: '/k', outDir: '/o' };
  it('runs e2e.test alone when serial, with the focus and skip as its ginkgo flags', () => {
    const c = commandLine({ ...base, focus: 'F', skip: 'S', parallel: 1 });
    expect(c.command).toBe('/c/e2e.test');
    expect(c.args).toEqual(
      expect.arrayContaining(['--ginkgo.focus=F', '--ginkgo.skip=S', '--ginkgo.v', '--kubeconfig=/k']),
    );
  });
  it('runs the ginkgo CLI with N processes in parallel, the suite flags after --', () => {
    const c = commandLine({ ...base, focus: 'F', skip: '', parallel: 4 });
    expect(c.command).toBe('/c/ginkgo');
    const dash = c.args.indexOf('--');
    expect(c.args.slice(0, dash)).toEqual(expect.arrayContaining(['--procs=4', '--focus=F', '/c/e2e.test']));
    expect(c.args.slice(0, dash).some((a) => a.startsWith('--skip'))).toBe(false);
    expect(c.args.slice(dash + 1)).toContain('--kubeconfig=/k');
  });
});
