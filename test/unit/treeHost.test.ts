/**
 * The shared clusterTree process's registrations (src/clustertree/host.ts): a registered tenant's
 * ports open, a removed one's close, a changed one restarts, a broken one is logged and tried
 * again without touching the others. The tenants' API servers are an address nothing answers:
 * their trees keep retrying their first lists (/readyz 503), which is all this needs.
 */
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TreeHost } from '../../src/clustertree/host.js';
import { SERVED_FILE, ServedState, type Registration } from '../../src/clustertree/registration.js';
import { createLogger } from '../../src/worker/logger.js';
import {
  UNREACHABLE_KUBECONFIG,
  freePort,
  readyzStatus,
  unreachableTreeConfig,
  until,
} from '../support/clusterTreeFakes.js';

describe('TreeHost', () => {
  let dir: string;
  let regs: string;
  let host: TreeHost;
  const lines: string[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'treehost-'));
    regs = join(dir, 'tenants');
    await writeFile(join(dir, 'kubeconfig'), UNREACHABLE_KUBECONFIG);
    await mkdir(regs);
    lines.length = 0;
    host = new TreeHost(regs, createLogger({ json: true, write: (l) => lines.push(l) }));
  });
  afterEach(async () => {
    await host.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function register(owner: string, port: number, hash = 'h1'): Promise<void> {
    const config = unreachableTreeConfig(owner, join(dir, 'kubeconfig'), port);
    await writeFile(join(dir, `${owner}.config.json`), JSON.stringify(config));
    const reg: Registration = {
      owner,
      config: join(dir, `${owner}.config.json`),
      hash,
      probe: `http://127.0.0.1:${port}/readyz`,
    };
    // As the runtime writes it: whole, by rename.
    await writeFile(join(regs, `${owner}.json.tmp`), JSON.stringify(reg));
    await rename(join(regs, `${owner}.json.tmp`), join(regs, `${owner}.json`));
  }

  it('opens a registered tenant’s port, closes a removed one’s, and leaves the others alone', async () => {
    const [pa, pb] = [await freePort(), await freePort()];
    await register('a', pa);
    await host.start();
    expect(host.owners()).toEqual(['a']);
    expect(await readyzStatus(pa)).toBe(503); // its tree still waits for its first lists
    await register('b', pb);
    await until('b served', async () => (await readyzStatus(pb)) === 503);
    await rm(join(regs, 'a.json'));
    await until('a closed', async () => (await readyzStatus(pa)) === 0);
    expect(host.owners()).toEqual(['b']);
    expect(await readyzStatus(pb)).toBe(503);
  });

  it('starts from an empty served state, and keeps the tree of a registration it cannot read', async () => {
    // What a previous process left: a failed tenant.
    await writeFile(
      join(regs, SERVED_FILE),
      JSON.stringify({ pass: 1, tenants: { old: { hash: 'h', serving: false, failures: 9 } } }),
    );
    const pa = await freePort();
    await register('a', pa);
    await host.start();
    const served = ServedState.parse(JSON.parse(await readFile(join(regs, SERVED_FILE), 'utf8')));
    expect(Object.keys(served.tenants)).toEqual(['a']);
    expect(await readyzStatus(pa)).toBe(503);
    // A registration that does not parse (not the runtime's whole write) stops nothing.
    await writeFile(join(regs, 'a.json'), '{"owner":');
    await new Promise((r) => setTimeout(r, 2500)); // past a rescan
    expect(await readyzStatus(pa)).toBe(503);
    expect(lines.some((l) => l.includes('ignoring an unreadable registration'))).toBe(true);
  });

  it('restarts a tenant whose registration changed, on its new port', async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    await register('a', p1, 'h1');
    await host.start();
    expect(await readyzStatus(p1)).toBe(503);
    await register('a', p2, 'h2');
    await until('a moved', async () => (await readyzStatus(p2)) === 503 && (await readyzStatus(p1)) === 0);
    expect(
      lines.some((l) => l.includes('registration changed; restarting') && l.includes('"owner":"a"')),
    ).toBe(true);
  });

  it('logs a tenant that cannot start and tries it again; the others are served', async () => {
    const taken = createServer();
    const busy = await freePort();
    await new Promise<void>((r) => taken.listen(busy, '127.0.0.1', r));
    const ok = await freePort();
    try {
      await register('bad', busy);
      await register('good', ok);
      await host.start();
      expect(await readyzStatus(ok)).toBe(503);
      expect(host.owners()).toEqual(['good']);
      const failed = () => lines.filter((l) => l.includes('could not start') && l.includes('"owner":"bad"'));
      expect(failed()[0]).toContain('EADDRINUSE');
      // What the runtime reads: the failed start counted, with why; the other one served.
      const served = ServedState.parse(JSON.parse(await readFile(join(regs, SERVED_FILE), 'utf8')));
      expect(served.pass).toBeGreaterThan(0);
      expect(served.tenants.good).toMatchObject({ hash: 'h1', serving: true, failures: 0 });
      expect(served.tenants.bad).toMatchObject({ hash: 'h1', serving: false });
      expect(served.tenants.bad!.failures).toBeGreaterThanOrEqual(1);
      expect(served.tenants.bad!.error).toContain('EADDRINUSE');
      // Freed, it is served at the next try (after a backoff of a second).
      await new Promise((r) => taken.close(r));
      await until('bad served once its port is free', async () => (await readyzStatus(busy)) === 503);
      await until('its failures cleared in the served state', async () => {
        const now = ServedState.parse(JSON.parse(await readFile(join(regs, SERVED_FILE), 'utf8')));
        return now.tenants.bad?.serving === true && now.tenants.bad.failures === 0;
      });
    } finally {
      taken.close();
    }
  });
});
