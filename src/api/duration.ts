/**
 * Durations as Kubernetes writes them (`8760h`, `90m`, `1h30m`, `45s`): h, m and s, in that
 * order. Pure, so workflow code may import it (src/api/virtualCluster.ts pulls in zod).
 */
export const GO_DURATION = /^([0-9]+h)?([0-9]+m)?([0-9]+s)?$/;

/** Milliseconds in `d`; NaN if it is not such a duration. */
export function parseDuration(d: string): number {
  const m = GO_DURATION.exec(d);
  if (!m || d === '') return NaN;
  const n = (g: string | undefined) => (g ? Number(g.slice(0, -1)) : 0);
  return ((n(m[1]) * 60 + n(m[2])) * 60 + n(m[3])) * 1000;
}
