/**
 * A tenant backup as one file: a gzipped tar (the `tar` package) holding `manifest.json`, the
 * etcd snapshot and the keys that let a restored tenant serve its data again (cluster,
 * front-proxy and etcd CAs, the service-account key pair). The manifest lists every other member
 * with its size and sha256, so a corrupted or truncated file is refused before anything is
 * touched. The file holds CA private keys: it is written with mode 0600 and must be kept so.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { create as createTar, extract as extractTar } from 'tar';
import { z } from 'zod';

export const BACKUP_FORMAT = 'kosmos-vc-backup';
export const BACKUP_VERSION = 1;
export const MANIFEST = 'manifest.json';
export const ETCD_SNAPSHOT = 'etcd.db';
/** What a backup must hold besides the snapshot: the keys a restored tenant serves with. */
export const REQUIRED_KEYS = [
  'pki/ca.crt',
  'pki/ca.key',
  'pki/front-proxy-ca.crt',
  'pki/front-proxy-ca.key',
  'pki/etcd/ca.crt',
  'pki/etcd/ca.key',
  'pki/sa.key',
  'pki/sa.pub',
] as const;

export const BackupManifest = z.object({
  format: z.literal(BACKUP_FORMAT),
  version: z.literal(BACKUP_VERSION),
  createdAt: z.string(),
  /** The VirtualCluster it was taken of. */
  source: z.object({ namespace: z.string(), name: z.string(), uid: z.string() }),
  /** Its spec then (without spec.kubeconfig): what `kosmos-vc restore` creates the new one with. */
  spec: z.record(z.string(), z.unknown()),
  files: z.array(
    z.object({
      path: z.string().regex(/^[a-z0-9][-a-z0-9._/]*$/),
      size: z.number().int().nonnegative(),
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
    }),
  ),
});
export type BackupManifest = z.infer<typeof BackupManifest>;

/** A backup that cannot be used: unreadable, truncated, altered, or not a kosmos-vc backup. */
export class InvalidBackupError extends Error {
  override readonly name = 'InvalidBackupError';
  constructor(
    readonly file: string,
    readonly why: string,
  ) {
    super(`invalid backup ${file}: ${why}`);
  }
}

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)).split(sep).join('/'));
  }
  return out.sort();
}

/**
 * Packs `dir` (the etcd snapshot and the keys, laid out as they are to be restored) with a
 * manifest into `file`, atomically (a temporary file renamed into place).
 */
export async function writeBackup(
  dir: string,
  file: string,
  about: Pick<BackupManifest, 'createdAt' | 'source' | 'spec'>,
): Promise<{ size: number; sha256: string }> {
  const members = (await listFiles(dir)).filter((p) => p !== MANIFEST);
  const manifest: BackupManifest = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    ...about,
    files: await Promise.all(
      members.map(async (path) => ({
        path,
        size: (await stat(join(dir, path))).size,
        sha256: await sha256(join(dir, path)),
      })),
    ),
  };
  await writeFile(join(dir, MANIFEST), JSON.stringify(manifest, null, 2), { mode: 0o600 });
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  // Hidden until complete: a listing (and retention) never sees a half-written backup.
  const tmp = join(dirname(file), `.partial-${process.pid}-${Date.now()}`);
  try {
    await createTar({ gzip: true, file: tmp, cwd: dir, portable: true, mode: 0o600 }, [MANIFEST, ...members]);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return { size: (await stat(file)).size, sha256: await sha256(file) };
}

/**
 * Unpacks `file` into a new directory under `into` and checks it against its manifest: every
 * listed member present with its size and sha256, nothing else. Returns the directory and the
 * manifest; the caller removes the directory. Throws InvalidBackupError for anything wrong.
 */
export async function readBackup(
  file: string,
  into: string,
): Promise<{ dir: string; manifest: BackupManifest }> {
  await mkdir(into, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(join(into, 'restore-'));
  try {
    const size = await stat(file).then(
      (s) => s.size,
      (e: NodeJS.ErrnoException) => {
        throw new InvalidBackupError(file, e.code === 'ENOENT' ? 'no such file' : e.message);
      },
    );
    if (size === 0) throw new InvalidBackupError(file, 'the file is empty');
    // Only plain files are unpacked (links and devices are left out); tar's defaults already
    // refuse absolute paths and `..`.
    await extractTar({
      file,
      cwd: dir,
      strict: true,
      filter: (_p, e) => 'type' in e && e.type === 'File',
    }).catch((e: unknown) => {
      throw new InvalidBackupError(file, `not a readable gzipped tar (truncated?): ${(e as Error).message}`);
    });
    const text = await readFile(join(dir, MANIFEST), 'utf8').catch(() => {
      throw new InvalidBackupError(file, `no ${MANIFEST}: not a kosmos-vc backup`);
    });
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new InvalidBackupError(file, `${MANIFEST} is not JSON`);
    }
    const parsed = BackupManifest.safeParse(raw);
    if (!parsed.success)
      throw new InvalidBackupError(
        file,
        `${MANIFEST}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      );
    const manifest = parsed.data;
    for (const required of [ETCD_SNAPSHOT, ...REQUIRED_KEYS])
      if (!manifest.files.some((f) => f.path === required))
        throw new InvalidBackupError(file, `no ${required} in it`);
    const present = new Set((await listFiles(dir)).filter((p) => p !== MANIFEST));
    for (const f of manifest.files) {
      if (!present.delete(f.path)) throw new InvalidBackupError(file, `${f.path} is missing (truncated?)`);
      const path = join(dir, f.path);
      if ((await stat(path)).size !== f.size || (await sha256(path)) !== f.sha256)
        throw new InvalidBackupError(file, `${f.path} does not match its checksum (corrupted or altered)`);
    }
    if (present.size > 0) throw new InvalidBackupError(file, `unlisted members: ${[...present].join(', ')}`);
    return { dir, manifest };
  } catch (e) {
    // tar may still be writing a member when it rejects: retry the removal (ENOTEMPTY), and never
    // let the clean-up hide why the file was refused.
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }).catch(() => undefined);
    throw e;
  }
}
