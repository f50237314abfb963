/**
 * One tenant's clusterTree: the tree, its kubelet endpoint and its status server (/readyz,
 * /healthz, /metrics, /status). A process runs one (`--config`) or every tenant registered with a
 * shared process (`--tenants`, ./host.ts); each keeps its own ports, credentials and metrics.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { Logger } from '../worker/logger.js';
import { closeConnections, reuseConnections } from '../api/kubeClient.js';
import { ClusterTreeMetrics } from '../metrics/clusterTree.js';
import type { ClusterTreeConfig } from './config.js';
import { ClusterTree } from './controller.js';
import { KubeletServer } from './kubeletServer.js';
import type { Registry } from 'prom-client';
import type { FairShare } from './queue.js';

export interface ServedTenant {
  /** Resolves once the first full sync is done (/readyz then answers 200). */
  readonly started: Promise<void>;
  /** Stops the tree (its syncs under way end first), then closes its ports. */
  stop(): Promise<void>;
}

function fromFile(file: string): KubeConfig {
  const k = new KubeConfig();
  k.loadFromFile(file);
  return reuseConnections(k);
}

/** In a pod (ADR 14): its service account's token, renewed by the kubelet, read again as it changes. */
function inCluster(): KubeConfig {
  const k = new KubeConfig();
  k.loadFromCluster();
  return reuseConnections(k);
}

function listen(server: Server, port: number, address: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** What a shared process gives each of its tenants: its sync slots and its process figures. */
export interface SharedParts {
  share: FairShare;
  processMetrics: Registry;
}

/** Opens the tenant's ports and starts its tree; a port that cannot be had rejects, with nothing left open. */
export async function serveTenant(
  cfg: ClusterTreeConfig,
  log: Logger,
  shared?: SharedParts,
): Promise<ServedTenant> {
  const hostKc = cfg.hostKubeconfig ? fromFile(cfg.hostKubeconfig) : inCluster();
  // The metrics read the tree's stats when scraped (the status server starts after the tree
  // exists); the tree reports each sync to them.
  const metrics = new ClusterTreeMetrics(cfg.tenant, () => tree.stats(), shared?.processMetrics);
  const tenantKc = fromFile(cfg.tenantKubeconfig);
  const tree: ClusterTree = new ClusterTree(cfg, tenantKc, hostKc, log, {
    onSynced: (key, seconds, ok) => metrics.synced(key, seconds, ok),
    ...(shared ? { share: shared.share } : {}),
  });
  let kubelet: KubeletServer | undefined;
  const server = createServer((req, res) => {
    if (req.url === '/readyz') {
      res.writeHead(tree.isReady ? 200 : 503).end(tree.isReady ? 'ok' : 'syncing');
    } else if (req.url === '/healthz') {
      res.writeHead(200).end('ok');
    } else if (req.url === '/metrics') {
      metrics.text().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    } else if (req.url === '/status') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ ...tree.stats(), ...kubelet?.stats() }));
    } else res.writeHead(404).end();
  });
  const close = () => {
    kubelet?.close();
    server.close();
    server.closeAllConnections();
  };
  try {
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
    await listen(server, cfg.listen.port, cfg.listen.address);
  } catch (e) {
    close();
    await tree.stop();
    await Promise.all([closeConnections(tenantKc), closeConnections(hostKc)]);
    throw e;
  }
  log.info('starting', {
    hostNamespace: cfg.hostNamespace,
    listen: `${cfg.listen.address}:${cfg.listen.port}`,
  });
  return {
    started: tree.start(),
    async stop() {
      await tree.stop();
      close();
      await Promise.all([closeConnections(tenantKc), closeConnections(hostKc)]);
    },
  };
}
