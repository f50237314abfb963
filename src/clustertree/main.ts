#!/usr/bin/env node
/**
 * The clusterTree process of one tenant: `node dist/src/clustertree/main.js --config <file>`.
 * The runtime starts and supervises it like any other component; /readyz answers 200 once the
 * first full sync is done, /status reports counters (JSON).
 */
import { KubeConfig } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { createLogger } from '../worker/logger.js';
import { ClusterTreeConfig } from './config.js';
import { reuseConnections } from '../api/kubeClient.js';
import { ClusterTree } from './controller.js';
import { KubeletServer } from './kubeletServer.js';
import { ClusterTreeMetrics } from '../metrics/clusterTree.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string' } } });
  if (!values.config) throw new Error('usage: clustertree --config <file>');
  const cfg = ClusterTreeConfig.parse(JSON.parse(await readFile(values.config, 'utf8')));
  const log = createLogger(
    {},
    { component: 'clustertree', vc: `${cfg.tenant.namespace}/${cfg.tenant.name}` },
  );
  const kc = (file: string) => {
    const k = new KubeConfig();
    k.loadFromFile(file);
    return reuseConnections(k);
  };
  // In a pod (ADR 14): its service account's token, renewed by the kubelet, which client-node
  // reads again as it changes.
  const inCluster = () => {
    const k = new KubeConfig();
    k.loadFromCluster();
    return reuseConnections(k);
  };
  const hostKc = cfg.hostKubeconfig ? kc(cfg.hostKubeconfig) : inCluster();
  // The metrics read the tree's stats when scraped (the status server starts after the tree
  // exists); the tree reports each sync to them.
  const metrics = new ClusterTreeMetrics(cfg.tenant, () => tree.stats());
  const tree: ClusterTree = new ClusterTree(cfg, kc(cfg.tenantKubeconfig), hostKc, log, (key, seconds, ok) =>
    metrics.synced(key, seconds, ok),
  );
  let kubelet: KubeletServer | undefined;
  if (cfg.kubelet) {
    const [cert, key, clientCA] = await Promise.all(
      [cfg.kubelet.certFile, cfg.kubelet.keyFile, cfg.kubelet.clientCAFile].map((f) => readFile(f, 'utf8')),
    );
    kubelet = new KubeletServer(
      { cert: cert!, key: key!, clientCA: clientCA! },
      hostKc,
      (ns, name) => tree.hostPodOf(ns, name),
      log.child({ part: 'kubelet' }),
    );
    await kubelet.listen(cfg.kubelet.port, cfg.kubelet.bind ?? cfg.kubelet.address);
  }

  const server = createServer((req, res) => {
    if (req.url === '/readyz') {
      res.writeHead(tree.isReady ? 200 : 503).end(tree.isReady ? 'ok' : 'syncing');
    } else if (req.url === '/healthz') {
      res.writeHead(200).end('ok');
    } else if (req.url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    } else if (req.url === '/status') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ ...tree.stats(), ...kubelet?.stats() }));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.listen.port, cfg.listen.address, resolve);
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    server.close();
    kubelet?.close();
    void tree.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('unhandledRejection', (e) => log.error('unhandled rejection', { error: String(e) }));

  log.info('starting', {
    hostNamespace: cfg.hostNamespace,
    listen: `${cfg.listen.address}:${cfg.listen.port}`,
  });
  await tree.start();
}

main().catch((e: unknown) => {
  process.stderr.write(`clustertree: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
