#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=2
/**
 * kosmos-vc command line.
 *
 *   kosmos-vc up       run the operator; with no KUBECONFIG / TEMPORAL_ADDRESS it first starts
 *                      the embedded default (local host cluster with kwok nodes, Temporal dev
 *                      server with its Web UI)
 *   kosmos-vc worker   run only a worker (activities + workflows) against KUBECONFIG and
 *                      TEMPORAL_ADDRESS; scale out by running more
 *   kosmos-vc resize   change a VirtualCluster's promoted nodes/CPU/memory and follow it
 *   kosmos-vc get | describe | kubeconfig
 *                      what a user needs of a VirtualCluster, without jsonpath or base64
 *   kosmos-vc rotate-ca
 *                      rotate a VirtualCluster's cluster CA, with a trust overlap
 *   kosmos-vc backup | restore
 *                      back a VirtualCluster up to a file; create a new one from such a file
 *
 * `kosmos-vc <command> --help` says the rest (src/cli/program.ts).
 */
// Checked before anything else is loaded: on an older Node.js, @kubernetes/client-node 2 (through
// undici 8) fails at import with a TypeError that names neither the cause nor the fix.
// Node.js 23 is out of support, and 23.0-23.7 lack the zstd decompressor undici loads.
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19) || major === 23) {
  process.stderr.write(
    `error: kosmos-vc needs Node.js 22.19 or newer (not 23); this is ${process.versions.node} (${process.execPath}).\n` +
      '`npm ci` installs Node.js 24 into node_modules/.bin, which npm scripts and `npx kosmos-vc` use.\n',
  );
  process.exit(1);
}
await import('./run.js');
