/**
 * Routes that keep a range on this machine where no real node routes them (ADR 7): added where no
 * route has the range, shared by the environments that want it, taken over where a crashed run
 * left one, left alone where another route has the range, and removed by the last holder without
 * touching a route someone else made since. Uses a range of the benchmarking block
 * (198.18.0.0/15) nothing on this machine serves; needs root, as the suite.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GUARD_HOLDERS_DIR, GUARD_PROTO, guardRanges, routeOf } from '../../src/node/network.js';

const run = promisify(execFile);
const RANGE = '198.18.254.0/24';
const IN_RANGE = '198.18.254.7';
const HOLDERS = join(GUARD_HOLDERS_DIR, RANGE.replace('/', '_'));
const ip = (...args: string[]) => run('ip', args);
/** Every route of the range, whoever made it (what an earlier, killed run of this test left). */
const clear = async () => {
  while (
    await ip('route', 'del', RANGE).then(
      () => true,
      () => false,
    )
  );
  await rm(HOLDERS, { recursive: true, force: true });
};
beforeEach(clear);
afterEach(clear);

describe.skipIf(process.getuid?.() !== 0)('guardRanges', () => {
  it('keeps a range here while anyone holds it, and never removes a route it did not make', async () => {
    const before = await routeOf(IN_RANGE);
    expect(before).not.toMatch(/No route to host|Invalid argument/);
    const warnings: string[] = [];
    const warn = (m: string) => void warnings.push(m);
    const guard = () => guardRanges([{ type: 'unreachable', prefix: RANGE }], warn);

    // Two environments hold one guard route; it goes with the last of them.
    const first = await guard();
    expect(first.held).toEqual([{ type: 'unreachable', prefix: RANGE }]);
    expect(await routeOf(IN_RANGE)).toMatch(/^unroutable .*No route to host/);
    const second = await guard();
    expect(second.held).toHaveLength(1);
    await second.remove();
    expect(await routeOf(IN_RANGE)).toMatch(/No route to host/);
    await first.remove();
    expect(await routeOf(IN_RANGE)).toBe(before);

    // Joining while another leaves, at once: whoever is left still has the route.
    const [a, b] = await Promise.all([guard(), guard()]);
    const [c] = await Promise.all([guard(), a.remove()]);
    await b.remove();
    expect(await routeOf(IN_RANGE)).toMatch(/No route to host/);
    await c.remove();
    expect(await routeOf(IN_RANGE)).toBe(before);

    // A crashed run's guard route (its holder's process gone) is taken over, then removed.
    await ip('route', 'add', 'blackhole', RANGE, 'proto', GUARD_PROTO);
    const dead = spawnSync('true').pid;
    await mkdir(HOLDERS, { recursive: true });
    await writeFile(join(HOLDERS, `${dead}-0-gone`), '');
    const third = await guard();
    expect(third.held).toHaveLength(1);
    await third.remove();
    expect(await routeOf(IN_RANGE)).toBe(before);
    // The holders' files went with the last of them.
    expect(await readdir(HOLDERS).catch(() => 'gone')).toBe('gone');

    // A route someone else made for the range is left alone.
    await ip('route', 'add', 'blackhole', RANGE);
    const fourth = await guard();
    expect(fourth.held).toEqual([]);
    await fourth.remove();
    expect(await routeOf(IN_RANGE)).toMatch(/Invalid argument/); // still the blackhole
    await clear();

    // So is one that replaced the guard route after it was made (a real node starting), even of
    // the same type.
    const fifth = await guard();
    await ip('route', 'replace', 'unreachable', RANGE);
    await fifth.remove();
    expect(await routeOf(IN_RANGE)).toMatch(/No route to host/);
    const { stdout } = await ip('-j', 'route', 'show', 'exact', RANGE);
    expect((JSON.parse(stdout) as { protocol: string }[]).map((r) => r.protocol)).not.toContain(GUARD_PROTO);
    expect(warnings).toEqual([]);
  });
});
