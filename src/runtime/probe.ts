import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request } from 'node:https';
import { checkServerIdentity } from 'node:tls';
import type { HttpsProbe } from './types.js';

interface Tls {
  ca: Buffer | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
}

/**
 * A function that GETs the probe URL once and resolves with the status code (or rejects with
 * the connection error). TLS files are read on the first successful call only, not on every
 * poll; a missing file is a failed probe, tried again next time. With `connectTo` it connects
 * there (a pod's address) and still checks the certificate against the URL's host name.
 */
export function prober(probe: HttpsProbe, timeoutMs = 2000, connectTo?: string): () => Promise<number> {
  const name = new URL(probe.url).hostname;
  const redirect = connectTo
    ? {
        hostname: connectTo,
        checkServerIdentity: (_host: string, cert: Parameters<typeof checkServerIdentity>[1]) =>
          checkServerIdentity(name, cert),
      }
    : {};
  const plain = probe.url.startsWith('http://');
  let tls: Tls | undefined;
  const load = async (): Promise<Tls> => {
    const [ca, cert, key] = await Promise.all([
      probe.caFile ? readFile(probe.caFile) : undefined,
      probe.certFile ? readFile(probe.certFile) : undefined,
      probe.keyFile ? readFile(probe.keyFile) : undefined,
    ]);
    if (!plain && !ca) throw new Error(`probe ${probe.url} needs a CA`);
    return { ca, cert, key };
  };
  return async () => {
    tls ??= await load();
    const { ca, cert, key } = tls;
    return new Promise((resolve, reject) => {
      const onResponse = (res: IncomingMessage) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      };
      const req = plain
        ? httpRequest(probe.url, { timeout: timeoutMs, agent: false, ...redirect }, onResponse)
        : request(probe.url, { ca, cert, key, timeout: timeoutMs, agent: false, ...redirect }, onResponse);
      req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs}ms`)));
      req.on('error', reject);
      req.end();
    });
  };
}

/**
 * The pause before a readiness wait's next probe: `fastMs` (25 ms) during the wait's first
 * second, counted from this call, then `maxMs`. A component ready within a second (etcd, a
 * tenant of the shared clusterTree) is seen so within `fastMs` instead of up to a whole `maxMs`
 * late; one that takes longer (an API server) is probed every `maxMs` from then on, as before.
 */
export function readinessPauses(maxMs: number, fastForMs = 1000, fastMs = 25): () => number {
  const start = Date.now();
  return () => (Date.now() - start < fastForMs ? Math.min(fastMs, maxMs) : maxMs);
}
