/**
 * The kubelet endpoint of a tenant's nodes. The tenant apiserver sends `kubectl logs`, `exec`,
 * `attach` and `port-forward` to the node's kubelet (status.addresses and
 * daemonEndpoints.kubeletEndpoint point here); clusterTree re-issues each request against the
 * host pod's subresource in the host API and pipes the answer back: a log response streams as it
 * comes, an upgraded exec/attach/port-forward connection (SPDY) is spliced socket to socket.
 * Nothing is buffered, so `logs -f` and interactive shells behave as on a kubelet.
 *
 * Only the tenant apiserver may call: TLS with a client certificate from the tenant CA whose
 * common name is the apiserver's kubelet-client identity. Only pods clusterTree runs are served.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { createServer, request, type RequestOptions, type Server } from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../worker/logger.js';

/** The common name of the tenant apiserver's kubelet-client certificate. */
export const APISERVER_KUBELET_CLIENT = 'kube-apiserver-kubelet-client';

export interface KubeletEndpointTls {
  cert: string;
  key: string;
  /** The tenant CA: client certificates must chain to it. */
  clientCA: string;
}

/** A tenant pod's host pod; `simulatedNode` names its node when that is a kwok node. */
export interface HostPodRef {
  namespace: string;
  name: string;
  simulatedNode?: string;
}

/** Where a tenant pod runs on the host, or undefined when clusterTree does not run it. */
export type HostPodResolver = (namespace: string, name: string) => HostPodRef | undefined;

type Verb = 'containerLogs' | 'exec' | 'attach' | 'portForward';

interface Route {
  verb: Verb;
  namespace: string;
  pod: string;
  container?: string;
}

/**
 * Parses the kubelet paths the apiserver uses: /containerLogs/{ns}/{pod}/{container},
 * /exec|attach/{ns}/{pod}[/{uid}]/{container}, /portForward/{ns}/{pod}[/{uid}].
 */
export function parseKubeletPath(path: string): Route | undefined {
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const [verb, namespace, pod, ...rest] = parts;
  if (!verb || !namespace || !pod) return undefined;
  switch (verb) {
    case 'containerLogs':
      return rest.length === 1 ? { verb, namespace, pod, container: rest[0]! } : undefined;
    case 'exec':
    case 'attach':
      return rest.length === 1 || rest.length === 2
        ? { verb, namespace, pod, container: rest.at(-1)! }
        : undefined;
    case 'portForward':
      return rest.length <= 1 ? { verb, namespace, pod } : undefined;
    default:
      return undefined;
  }
}

const SUBRESOURCE: Record<Verb, string> = {
  containerLogs: 'log',
  exec: 'exec',
  attach: 'attach',
  portForward: 'portforward',
};

/** The kubelet's names for the stream options (pkg/apis/core ExecStdinParam, ...) and the host API's. */
const STREAM_PARAMS: Record<string, string> = {
  input: 'stdin',
  output: 'stdout',
  error: 'stderr',
  tty: 'tty',
};

/**
 * The host API path and query for a kubelet request: the same options under the host pod's
 * name, in the API's terms. The container moves from the path into the query; exec/attach's
 * `input=1`/`output=1`/`error=1`/`tty=1` become `stdin=true`/...; port-forward's `port=a,b`
 * becomes `ports=a&ports=b`. Log options have the same names on both sides.
 */
export function hostPath(
  route: Route,
  host: { namespace: string; name: string },
  query: URLSearchParams,
): string {
  const q = new URLSearchParams();
  for (const [k, v] of query) {
    if (route.verb === 'portForward' && k === 'port')
      for (const port of v.split(',').filter(Boolean)) q.append('ports', port);
    else if ((route.verb === 'exec' || route.verb === 'attach') && STREAM_PARAMS[k])
      q.append(STREAM_PARAMS[k], v === '0' || v === 'false' ? 'false' : 'true');
    else q.append(k, v);
  }
  if (route.container) q.set('container', route.container);
  const base = `/api/v1/namespaces/${encodeURIComponent(host.namespace)}/pods/${encodeURIComponent(host.name)}/${SUBRESOURCE[route.verb]}`;
  const qs = q.toString();
  return qs ? `${base}?${qs}` : base;
}

/** Request headers worth passing on: the stream negotiation, never the caller's credentials. */
function forwardHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name of [
    'connection',
    'upgrade',
    'x-stream-protocol-version',
    'sec-websocket-protocol',
    'sec-websocket-key',
    'sec-websocket-version',
    'accept',
    'content-type',
  ]) {
    const v = h[name];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

/** A response head for a raw socket; `close` frames the body by closing (no chunked encoding). */
function rawHead(status: number, message: string, rawHeaders: string[], close = false): string {
  const framing = new Set(['transfer-encoding', 'content-length', 'connection']);
  let head = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (close && framing.has(rawHeaders[i]!.toLowerCase())) continue;
    head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  }
  return `${head}${close ? 'Connection: close\r\n' : ''}\r\n`;
}

export class KubeletServer {
  private readonly server: Server;
  private active = 0;
  private served = 0;

  constructor(
    tls: KubeletEndpointTls,
    private readonly host: KubeConfig,
    private readonly resolve: HostPodResolver,
    private readonly log: Logger,
  ) {
    this.server = createServer({
      cert: tls.cert,
      key: tls.key,
      ca: tls.clientCA,
      requestCert: true,
      rejectUnauthorized: true,
      // A caller that closes its sending side (stdin done) still reads the rest of the stream.
      allowHalfOpen: true,
    });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res, undefined).catch((e: unknown) => this.fail(res, 502, (e as Error).message));
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      // Node takes its own error listener off an upgraded socket: a reset must not crash us.
      socket.on('error', () => socket.destroy());
      this.handle(req, undefined, { socket, head }).catch((e: unknown) => {
        this.log.warn('kubelet stream failed', { error: (e as Error).message });
        socket.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\n\r\n${(e as Error).message}\n`);
      });
    });
    // A tenant pod that ends mid-stream or a caller that goes away must not take clusterTree down.
    this.server.on('clientError', (_e, socket) => socket.destroy());
  }

  listen(port: number, address: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, address, () => resolve());
    });
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }

  stats(): { kubeletStreamsActive: number; kubeletRequestsServed: number } {
    return { kubeletStreamsActive: this.active, kubeletRequestsServed: this.served };
  }

  private fail(res: ServerResponse, status: number, message: string): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(status, { 'content-type': 'text/plain' }).end(`${message}\n`);
  }

  private authorized(req: IncomingMessage): boolean {
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    return (req.socket as TLSSocket).authorized && peer.subject?.CN === APISERVER_KUBELET_CLIENT;
  }

  private async handle(
    req: IncomingMessage,
    res: ServerResponse | undefined,
    upgrade: { socket: Duplex; head: Buffer } | undefined,
  ): Promise<void> {
    const reply = (status: number, message: string) => {
      if (res) this.fail(res, status, message);
      else
        upgrade?.socket.end(`HTTP/1.1 ${status} ${message}\r\ncontent-type: text/plain\r\n\r\n${message}\n`);
    };
    if (!this.authorized(req)) return reply(403, 'Forbidden');
    const url = new URL(req.url ?? '/', 'https://kubelet');
    if (url.pathname === '/healthz') return reply(200, 'ok');
    const route = parseKubeletPath(url.pathname);
    if (!route) return reply(404, 'Not Found');
    const hostPod = this.resolve(route.namespace, route.pod);
    if (!hostPod) return reply(404, `pod ${route.namespace}/${route.pod} does not run on this node`);
    if (hostPod.simulatedNode)
      return reply(
        400,
        `pod ${route.namespace}/${route.pod} runs on ${hostPod.simulatedNode}, a simulated (kwok) node: it has no containers, so no logs, exec, attach or port-forward`,
      );

    const server = new URL(this.host.getCurrentCluster()!.server);
    const opts: RequestOptions = {
      method: req.method ?? 'GET',
      hostname: server.hostname,
      port: server.port || 443,
      path: hostPath(route, hostPod, url.searchParams),
      headers: forwardHeaders(req.headers),
    };
    await this.host.applyToHTTPSOptions(opts);
    opts.agent = false;
    // The caller may have gone while the credentials were read: then there is nothing to serve.
    if (req.socket.destroyed || upgrade?.socket.destroyed) return;
    const out = request(opts);
    this.served++;
    this.active++;
    let done = false;
    const finish = () => {
      if (!done) this.active--;
      done = true;
    };

    if (upgrade) {
      const { socket, head } = upgrade;
      // The caller may go away before the host answers: then nothing of the request may stay open.
      socket.on('close', () => {
        out.destroy();
        finish();
      });
      out.on('upgrade', (hres, hostSocket, hostHead) => {
        if (socket.destroyed) {
          hostSocket.destroy();
          return;
        }
        socket.write(rawHead(101, 'Switching Protocols', hres.rawHeaders));
        if (hostHead.length > 0) socket.write(hostHead);
        if (head.length > 0) hostSocket.write(head);
        // Each direction ends the other's writing side when it ends (half-close), so everything
        // written is flushed before the connection goes; an error on either side ends both.
        hostSocket.pipe(socket);
        socket.pipe(hostSocket);
        hostSocket.on('error', () => socket.destroy());
        socket.on('error', () => hostSocket.destroy());
        socket.on('close', () => hostSocket.destroy());
        hostSocket.on('close', () => {
          if (!socket.writableEnded) socket.destroy();
        });
      });
      // The host refused the upgrade (pod gone, container not running, ...): pass its answer on.
      out.on('response', (hres) => {
        socket.write(rawHead(hres.statusCode ?? 502, hres.statusMessage ?? '', hres.rawHeaders, true));
        hres.pipe(socket);
        hres.on('error', () => socket.destroy());
        hres.on('aborted', () => socket.destroy());
      });
      out.on('error', (e) => {
        if (!socket.destroyed)
          socket.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\n\r\n${e.message}\n`);
      });
      req.pipe(out);
      return;
    }

    const response = res!;
    out.on('response', (hres) => {
      const headers: Record<string, string | string[]> = {};
      for (const h of ['content-type', 'content-length', 'transfer-encoding']) {
        const v = hres.headers[h];
        if (v !== undefined) headers[h] = v;
      }
      response.writeHead(hres.statusCode ?? 502, headers);
      // Each chunk goes out as it arrives: `logs -f` sees a line as soon as the host sends it.
      hres.pipe(response);
      hres.on('end', finish);
      hres.on('error', () => response.destroy());
    });
    out.on('error', (e) => {
      finish();
      this.fail(response, 502, e.message);
    });
    // The caller went away (`logs -f` interrupted): stop reading from the host.
    response.on('close', () => {
      finish();
      out.destroy();
    });
    req.pipe(out);
  }
}
