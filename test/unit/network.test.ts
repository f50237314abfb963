/**
 * Routes that keep a range on this machine where no real node routes it: added where no route
 * covers the range exactly, left alone where one does, removed by whoever added them. Uses a
 * range of the benchmarking block (198.18.0.0/15) nothing on this machine serves; needs root.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { guardRanges, routeOf } from '../../src/node/network.js';

const RANGE = '198.18.254.0/24';
const IN_RANGE = '198.18.254.7';
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe.skipIf(process.getuid?.() !== 0)('guardRanges', () => {
  it('keeps a range here until removed, and leaves a route it did not add', async () => {
    expect(await routeOf(IN_RANGE)).toMatch(/ via /); // the default gateway, before
    const warnings: string[] = [];
    const first = await guardRanges([{ type: 'unreachable', prefix: RANGE }], (m) => warnings.push(m));
    cleanups.push(() => first.remove());
    expect(first.added).toEqual([{ type: 'unreachable', prefix: RANGE }]);
    expect(await routeOf(IN_RANGE)).toMatch(/^unroutable .*No route to host/);
    // A second guard (or another environment's route) of the same range adds nothing, and its
    // removal leaves the first one's route.
    const second = await guardRanges([{ type: 'blackhole', prefix: RANGE }], (m) => warnings.push(m));
    expect(second.added).toEqual([]);
    await second.remove();
    expect(await routeOf(IN_RANGE)).toMatch(/No route to host/);
    await first.remove();
    expect(await routeOf(IN_RANGE)).toMatch(/ via /);
    expect(warnings).toEqual([]);
  });
});
