/**
 * What a shared clusterTree process (./host.ts) and the operator's runtime
 * (src/runtime/sharedClusterTree.ts) tell each other through its directory: schemas alone, so the
 * operator reads them without loading clusterTree.
 */
import { z } from 'zod';

/** What the operator's runtime writes for one tenant of a shared process. */
export const Registration = z.object({
  owner: z.string().min(1),
  /** The tenant's clusterTree configuration file (what `--config` names in a process of its own). */
  config: z.string().min(1),
  /** Changes when the tenant's clusterTree must start again (the runtime's spec hash). */
  hash: z.string().min(1),
  /** Where the runtime probes the tenant's readiness. */
  probe: z.url(),
});
export type Registration = z.infer<typeof Registration>;

/**
 * What the process serves, written (`<dir>/.served`, whole, by rename) after every pass over the
 * registrations: `pass` is when that pass began to read them, so a registration removed before it
 * is no longer served once a state with a later `pass` lists it no more.
 */
export const ServedState = z.object({
  pass: z.number(),
  tenants: z.record(
    z.string(),
    z.object({ hash: z.string(), serving: z.boolean(), failures: z.number(), error: z.string().optional() }),
  ),
});
export type ServedState = z.infer<typeof ServedState>;
export const SERVED_FILE = '.served';
