/**
 * What `npm run conformance` runs: every `[Conformance]` spec of the pinned suite, minus the specs
 * a tenant cannot pass by the nature of the design. Each entry says why; docs/conformance.md
 * lists them with their regex. The list is meant to stay empty, as vcluster's is.
 */
import type { DesignSkip } from './report.js';

export const CONFORMANCE_FOCUS = '\\[Conformance\\]';

/**
 * The CPU/memory slice the conformance tenant promotes besides the real node: the suite wants
 * two schedulable nodes, and the slice's virtual node is the second one (its pods run on the
 * same real host node, placed by the host scheduler; ADR 8).
 */
export const TENANT_RESOURCES = { cpu: '2', memory: '8Gi' };

export const DESIGN_SKIPS: readonly DesignSkip[] = [];

/** One skip regex for all design skips ('' when there are none). */
export const designSkipRegex = (): string => DESIGN_SKIPS.map((d) => `(?:${d.pattern})`).join('|');
