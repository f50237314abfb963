// The workflow bundle's entry point: every workflow the worker runs is exported here.
export { virtualClusterWorkflow } from './virtualCluster.js';
export { backupWorkflow } from './backup.js';
