/**
 * What `npm run conformance` runs: every `[Conformance]` spec of the pinned suite, minus the specs
 * a tenant cannot pass by the nature of the design. Each entry says why; docs/conformance.md
 * lists them with their regex. The list is meant to stay empty, as vcluster's is.
 */
import type { DesignSkip } from './report.js';

export const CONFORMANCE_FOCUS = '\\[Conformance\\]';

/**
 * The conformance tenant's spec besides the real node it promotes (ADR 8):
 * - a CPU/memory slice: the suite wants two schedulable nodes, and the slice's virtual node is
 *   the second one (its pods run on the same real host node, placed by the host scheduler), small
 *   enough that filling 70 % of both nodes' CPU fits the one real node (ADR 8, "Two nodes");
 * - `podSecurity: privileged`: the suite runs pods on the host network and with host ports,
 *   which a baseline tenant refuses by design.
 */
export const CONFORMANCE_TENANT = {
  resources: { cpu: '500m', memory: '8Gi' },
  podSecurity: 'privileged',
} as const;

export const DESIGN_SKIPS: readonly DesignSkip[] = [];

/** One skip regex for all design skips ('' when there are none). */
export const designSkipRegex = (): string => DESIGN_SKIPS.map((d) => `(?:${d.pattern})`).join('|');
