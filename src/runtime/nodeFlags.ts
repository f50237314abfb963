/**
 * How the Node.js processes kosmos-vc runs are started (ADR 12, decision 12).
 *
 * Node.js 24's V8 lets a process's young generation grow to 64 MiB a semi-space (128 MiB of new
 * space) under load and keeps it committed once the load has passed; Node.js 20's stopped at
 * 16 MiB. An operator that had provisioned 30 tenants kept 206 MiB of heap for 65 MiB of live
 * objects (80 MiB with the cap), and a clusterTree that had synced 1,000 pods peaked ~95 MiB
 * higher. The flags cap it; `test/unit/nodeFlags.test.ts` checks that every place that starts
 * the operator passes them and that they take effect; integration tests read clusterTree's.
 */

/**
 * The operator (worker and watcher): `kosmos-vc` (its shebang), its image's entry point,
 * `npm start` and the benchmarks, which run the operator in their own process. With 30 tenants
 * provisioned it kept 253-263 MiB against 395-431; its CPU for them was 17-27 % higher (~0.2 s a
 * tenant) in two pairs of runs, and 4 or 8 MiB came out higher still: noise of several seconds,
 * or a cost up to that.
 */
export const OPERATOR_NODE_FLAGS = ['--max-semi-space-size=2'] as const;

/**
 * The operator's environment: glibc gives each thread that allocates at once a malloc arena of
 * its own (up to 8 a core); the Temporal core's threads, the libuv pool's (key generation) and
 * the TLS connections left ~15-30 MiB more over them than two arenas hold, for no measurable CPU.
 * Set where the operator starts: the shebang, the npm scripts, the chart's Deployment (the image
 * is clusterTree's too, and an idle clusterTree kept 129 MiB either way: it goes without).
 */
export const OPERATOR_NODE_ENV = { MALLOC_ARENA_MAX: '2' } as const;

/**
 * A tenant's clusterTree, as a process or a pod. With 2 MiB an idle one keeps 129 MiB against 163
 * with 16 (Node.js 20's size), and one syncing 1,000 pods peaks at 231 MiB against 286 and 326
 * (no cap); its CPU for them: 8.2 s, against 8.4 and 7.3 s (one run each: a cost as the
 * operator's is possible).
 */
export const CLUSTERTREE_NODE_FLAGS = ['--max-semi-space-size=2'] as const;
