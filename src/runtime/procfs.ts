/**
 * What /proc says about a process on this machine: whether a pid is still the process it was
 * (its start time), what it runs, and which process runs a given command line. The process
 * runtime adopts its components by these; the node's network setup names its holders by them.
 */
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';

/**
 * The fields of a /proc/<pid>/stat text after the command name (which may hold spaces and
 * parentheses): [0] is field 3 (the state), [11] and [12] utime and stime, [19] the start time.
 */
export function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot. */
export function procStartTime(pid: number): string | undefined {
  try {
    const fields = statFields(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined; // exited, not yet reaped
    return fields[19];
  } catch {
    return undefined;
  }
}

/** The program a process runs: the first word of its command line. */
export function procCommand(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
  } catch {
    return undefined;
  }
}

/** A running process whose command line is exactly `command` and `args`. */
export async function findByCommandLine(
  command: string,
  args: readonly string[],
): Promise<{ pid: number; startTime: string } | undefined> {
  const wanted = [command, ...args].join('\0');
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^[0-9]+$/.test(entry)) continue;
    const pid = Number(entry);
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0$/, '');
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline !== wanted) continue;
    const startTime = procStartTime(pid);
    if (startTime !== undefined) return { pid, startTime };
  }
  return undefined;
}
