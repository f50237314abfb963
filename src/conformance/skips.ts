/**
 * What `npm run conformance` runs: every `[Conformance]` spec of the pinned suite, minus the specs
 * a tenant cannot pass by the nature of the design. Each entry says why; docs/conformance.md
 * lists them with their regex. The list is meant to stay empty, as vcluster's is.
 */
import type { DesignSkip } from './report.js';

export const CONFORMANCE_FOCUS = '\\[Conformance\\]';

export const DESIGN_SKIPS: readonly DesignSkip[] = [];

/** One skip regex for all design skips ('' when there are none). */
export const designSkipRegex = (): string => DESIGN_SKIPS.map((d) => `(?:${d.pattern})`).join('|');
