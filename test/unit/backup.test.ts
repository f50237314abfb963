import { mkdtemp, readFile, rm, stat, truncate, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create as createTar } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupFile } from '../../src/activities/backup.js';
import {
  ETCD_SNAPSHOT,
  InvalidBackupError,
  MANIFEST,
  REQUIRED_KEYS,
  readBackup,
  writeBackup,
} from '../../src/backup/archive.js';

let root: string;
let good: string;
const about = {
  createdAt: '2026-12-03T06:00:00.000Z',
  source: { namespace: 'team', name: 'vc1', uid: 'u-1' },
  spec: { serviceCIDR: '10.96.0.0/12' },
};

async function content(dir: string): Promise<void> {
  await mkdir(join(dir, 'pki', 'etcd'), { recursive: true });
  // Large enough that a flipped byte lands inside the compressed snapshot, not in the header.
  await writeFile(
    join(dir, ETCD_SNAPSHOT),
    Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7919) % 251)),
  );
  for (const f of REQUIRED_KEYS) await writeFile(join(dir, f), f === 'pki/etcd/ca.crt' ? 'etcd cert' : f);
}

const refused = async (file: string, why: RegExp) => {
  const e: unknown = await readBackup(file, join(root, 'out')).catch((x: unknown) => x);
  expect(e).toBeInstanceOf(InvalidBackupError);
  expect((e as Error).message).toMatch(why);
};

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kvc-backup-'));
  const src = join(root, 'src');
  await content(src);
  good = join(root, 'store', 'good.tar.gz');
  await writeBackup(src, good, about);
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('backup archive', () => {
  it('packs the snapshot and keys with a manifest, readable only by its owner, and reads them back', async () => {
    expect((await stat(good)).mode & 0o777).toBe(0o600);
    const { dir, manifest } = await readBackup(good, join(root, 'out'));
    expect(manifest).toMatchObject({ format: 'kosmos-vc-backup', version: 1, source: about.source });
    expect(manifest.files.map((f) => f.path)).toEqual([ETCD_SNAPSHOT, ...REQUIRED_KEYS].sort());
    expect(await readFile(join(dir, 'pki', 'etcd', 'ca.crt'), 'utf8')).toBe('etcd cert');
    expect((await stat(join(dir, ETCD_SNAPSHOT))).size).toBe(200_000);
    await rm(dir, { recursive: true });
  });

  it('refuses a truncated, corrupted, altered or foreign file, and a missing or empty one', async () => {
    const copy = async (name: string, change: (b: Buffer) => Buffer) => {
      const f = join(root, name);
      await writeFile(f, change(await readFile(good)));
      return f;
    };
    await refused(await copy('half.tar.gz', (b) => b.subarray(0, Math.floor(b.length / 2))), /truncated/);
    await refused(
      await copy('flipped.tar.gz', (b) => {
        const c = Buffer.from(b);
        const at = Math.floor(c.length / 2);
        c[at] = c[at]! ^ 0xff;
        return c;
      }),
      /invalid backup/,
    );
    // A well-formed archive whose member no longer matches the manifest.
    const altered = join(root, 'altered');
    await content(altered);
    await writeFile(join(altered, MANIFEST), (await readFile(join(root, 'src', MANIFEST))).toString());
    await writeFile(join(altered, 'pki', 'ca.key'), 'another key');

    await createTar({ gzip: true, file: join(root, 'altered.tar.gz'), cwd: altered }, [
      MANIFEST,
      ETCD_SNAPSHOT,
      'pki',
    ]);
    await refused(join(root, 'altered.tar.gz'), /pki\/ca.key does not match its checksum/);
    // Something else packed the same way.
    await createTar({ gzip: true, file: join(root, 'foreign.tar.gz'), cwd: altered }, ['pki']);
    await refused(join(root, 'foreign.tar.gz'), /no manifest.json/);
    // Well-formed and checksummed, but without the keys a restored tenant needs.
    const keyless = join(root, 'keyless');
    await mkdir(keyless);
    await writeFile(join(keyless, ETCD_SNAPSHOT), 'db');
    await writeBackup(keyless, join(root, 'keyless.tar.gz'), about);
    await refused(join(root, 'keyless.tar.gz'), /no pki\/ca.crt in it/);
    const empty = join(root, 'empty.tar.gz');
    await writeFile(empty, '');
    await refused(empty, /empty/);
    await refused(join(root, 'missing.tar.gz'), /no such file/);
    await truncate(join(root, 'half.tar.gz'), 10);
    await refused(join(root, 'half.tar.gz'), /truncated/);
  });

  it('resolves spec.restore.backup only inside its namespace', () => {
    expect(backupFile('/b', 'team', 'vc1/x.tar.gz')).toBe('/b/team/vc1/x.tar.gz');
    expect(backupFile('/b', 'team', '../other/vc1/x.tar.gz')).toBeUndefined();
    expect(backupFile('/b', 'team', 'vc1/../../x')).toBeUndefined();
    expect(backupFile('/b', 'team', 'x.tar.gz')).toBeUndefined();
    // Two segments, but the first climbs out of the namespace.
    expect(backupFile('/b', 'team', '../x')).toBeUndefined();
  });
});
