import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request } from 'node:https';
import type { HttpsProbe } from './types.js';

/** One HTTPS GET; resolves with the status code or rejects with the connection error. */
export async function probeOnce(probe: HttpsProbe, timeoutMs = 2000): Promise<number> {
  const [ca, cert, key] = await Promise.all([
    probe.caFile ? readFile(probe.caFile) : undefined,
    probe.certFile ? readFile(probe.certFile) : undefined,
    probe.keyFile ? readFile(probe.keyFile) : undefined,
  ]);
  const plain = probe.url.startsWith('http://');
  if (!plain && !ca) throw new Error(`probe ${probe.url} needs a CA`);
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
}
