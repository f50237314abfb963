import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import type { HttpsProbe } from './types.js';

/** One HTTPS GET; resolves with the status code or rejects with the connection error. */
export async function probeOnce(probe: HttpsProbe, timeoutMs = 2000): Promise<number> {
  const [ca, cert, key] = await Promise.all([
    readFile(probe.caFile),
    probe.certFile ? readFile(probe.certFile) : undefined,
    probe.keyFile ? readFile(probe.keyFile) : undefined,
  ]);
  return new Promise((resolve, reject) => {
    const req = request(probe.url, { ca, cert, key, timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs}ms`)));
    req.on('error', reject);
    req.end();
  });
}
