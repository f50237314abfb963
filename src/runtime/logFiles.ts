/**
 * Component logs: files a child process writes through its own descriptor, opened for appending.
 *
 * Capped by copy and truncate (logrotate's `copytruncate`): the process keeps its descriptor, and
 * since it appends, its next write lands at the start of the emptied file. Rotation libraries for
 * Node.js rotate streams this process writes; none rotates a file another process holds open, so
 * this is by hand. Lines written between the copy and the truncation are lost, as with logrotate.
 */
import { copyFile, open, stat, truncate } from 'node:fs/promises';

/** A log's size in bytes (0 when there is none). */
export function logSize(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.size,
    () => 0,
  );
}

/** The previous part of a capped log. */
export const previousLog = (path: string): string => `${path}.1`;

/**
 * Moves the log to its `.1` (replacing the one before) and empties it when it has grown past
 * `maxBytes`. True when it did.
 */
export async function capLog(path: string, maxBytes: number): Promise<boolean> {
  if ((await logSize(path)) <= maxBytes) return false;
  await copyFile(path, previousLog(path));
  await truncate(path, 0);
  return true;
}

/** The last `maxBytes` of a file (none when it cannot be read), and whether that is all of it. */
async function tailBytes(path: string, maxBytes: number): Promise<{ bytes: Buffer; whole: boolean }> {
  try {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, maxBytes);
      const bytes = Buffer.alloc(len);
      const { bytesRead } = await fh.read(bytes, 0, len, size - len);
      return { bytes: bytes.subarray(0, bytesRead), whole: len === size };
    } finally {
      await fh.close();
    }
  } catch {
    return { bytes: Buffer.alloc(0), whole: true };
  }
}

/**
 * The log's last `lines` lines, read from at most its last `maxBytes`; a log capped a moment ago
 * is continued from the end of its previous part, within the same byte budget.
 */
export async function logTail(path: string, lines: number, maxBytes: number): Promise<string> {
  const current = await tailBytes(path, maxBytes);
  let bytes = current.bytes;
  const have = bytes.toString('utf8').split('\n').length - 1;
  if (have < lines && current.whole && bytes.length < maxBytes) {
    const before = await tailBytes(previousLog(path), maxBytes - bytes.length);
    bytes = Buffer.concat([before.bytes, bytes]);
  }
  return bytes
    .toString('utf8')
    .split('\n')
    .slice(-lines - 1)
    .join('\n');
}
