/**
 * clusterTree's watched lists against a minimal API server: a stopped or restarted watch is not
 * taken for a failure (client-node 2 reports its own abort as an error), a failed one is.
 */
import { KubeConfig, type KubernetesListObject } from '@kubernetes/client-node';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Informers } from '../../src/clustertree/informers.js';
import { createLogger } from '../../src/worker/logger.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

/** A server that lists no pods and holds every watch open without a word, or fails the first `failWatches`. */
async function apiServer(failWatches = 0) {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const watch = req.url?.includes('watch=true') ?? false;
    requests.push(watch ? 'watch' : 'list');
    res.setHeader('content-type', 'application/json');
    if (watch && failWatches-- > 0) {
      res.statusCode = 500;
      res.end('{}');
    } else if (watch) res.flushHeaders();
    else res.end(JSON.stringify({ kind: 'PodList', metadata: { resourceVersion: '7' }, items: [] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    server.closeAllConnections();
    server.close();
  });
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'c',
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return { kc, requests };
}

function informers(kc: KubeConfig) {
  const warnings: string[] = [];
  const log = createLogger({ level: 'warn', json: true, write: (l) => warnings.push(l) });
  const inf = new Informers(log);
  const list = async (): Promise<KubernetesListObject<never>> => {
    const res = await fetch(`${kc.getCurrentCluster()!.server}/api/v1/pods`);
    return (await res.json()) as KubernetesListObject<never>;
  };
  const cache = inf.add(kc, 'pods', '/api/v1/pods', list, () => undefined);
  cleanups.push(() => void inf.stop());
  return { inf, cache, warnings };
}

describe('Informers', () => {
  it('leaves a watch stopped behind its back stopped, and says nothing', async () => {
    const { kc, requests } = await apiServer();
    const { inf, cache, warnings } = informers(kc);
    expect(await inf.start()).toBe(true);
    await sleep(200);
    expect(requests).toEqual(['list', 'watch']);
    await cache.stop();
    await sleep(1_500); // longer than the first restart's backoff
    expect(requests).toEqual(['list', 'watch']);
    expect(warnings).toEqual([]);
  });

  it('restarts a watch that failed, with a warning', async () => {
    const { kc, requests } = await apiServer(1);
    const { inf, warnings } = informers(kc);
    expect(await inf.start()).toBe(true);
    await sleep(1_500);
    // Watched again from the resourceVersion it had, after the 1 s backoff: no new list.
    expect(requests).toEqual(['list', 'watch', 'watch']);
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!)).toMatchObject({ msg: 'watch failed; restarting', source: 'pods' });
  });
});
