import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request } from 'node:https';
import type { HttpsProbe } from './types.js';

interface Tls {
  ca: Buffer | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
}

/**
 * A function that GETs the probe URL once and resolves with the status code (or rejects with
 * the connection error). TLS files are read on the first successful call only, not on every
 * poll; a missing file is a failed probe, tried again next time.
 */
export function prober(probe: HttpsProbe, timeoutMs = 2000): () => Promise<number> {
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
        ? httpRequest(probe.url, { timeout: timeoutMs, agent: false }, onResponse)
        : request(probe.url, { ca, cert, key, timeout: timeoutMs, agent: false }, onResponse);
      req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs}ms`)));
      req.on('error', reject);
      req.end();
    });
  };
}
