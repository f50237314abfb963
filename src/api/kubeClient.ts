/**
 * Small helpers around @kubernetes/client-node shared by the operator and clusterTree: API
 * error codes, and connection reuse.
 */
import { ApiException, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';

/** The HTTP status of a failed API call; undefined for any other error. */
export const statusCode = (e: unknown): number | undefined =>
  e instanceof ApiException ? e.code : undefined;
export const isNotFound = (e: unknown): boolean => statusCode(e) === 404;
export const isConflict = (e: unknown): boolean => statusCode(e) === 409;

/**
 * An error as text, with its cause: undici (client-node 2) says only `TypeError: fetch failed`
 * and keeps the reason (`connect ECONNREFUSED ...`) in `cause`.
 */
export function errorText(e: unknown): string {
  type Cause = { code?: unknown; message?: unknown; errors?: { message?: unknown }[] };
  const cause = (e as { cause?: Cause | string } | undefined)?.cause;
  // Node's connect over several addresses (localhost) fails with an AggregateError whose own
  // message is empty: its code, or its first error, says why.
  const why =
    typeof cause === 'string' ? cause : cause?.message || cause?.code || cause?.errors?.[0]?.message;
  const text = e instanceof Error ? e.message : String(e);
  return typeof why === 'string' && why && !text.includes(why) ? `${text}: ${why}` : text;
}

/** The message of an API error's Status body (any other error as text, with its cause). */
export function apiMessage(e: unknown): string {
  if (!(e instanceof ApiException)) return e instanceof Error ? errorText(e) : String(e);
  try {
    const body = (typeof e.body === 'string' ? JSON.parse(e.body) : e.body) as { message?: string };
    return body.message ?? `HTTP ${e.code}`;
  } catch {
    return `HTTP ${e.code}`;
  }
}

/**
 * Whether a ListWatch's error is its own abort: client-node reports the watch it aborts in
 * `stop()`, or in `start()` over a running watch, as an error (2.0 through undici, 1.4 through
 * node-fetch). Restarting on it would undo a stop, or abort the watch the restart itself just
 * opened; a failed watch says something else (a TypeError, a status code).
 */
export const isOwnAbort = (e: unknown): boolean =>
  (e as { name?: unknown } | undefined)?.name === 'AbortError';

/** Request options for a JSON merge patch (client-node defaults to JSON patch). */
export const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** For `.catch()`: an API error with one of `codes` becomes undefined, anything else is rethrown. */
export const ignoreStatus =
  (...codes: number[]) =>
  (e: unknown): undefined => {
    if (codes.includes(statusCode(e) ?? 0)) return undefined;
    throw e;
  };

type DispatcherFactory = (cluster: { name?: string } | null, options: Record<string, unknown>) => unknown;

interface Reusing {
  createDispatcher?: DispatcherFactory;
  kosmosReused?: true;
  kosmosClose?: () => Promise<void>;
}

/**
 * client-node 2.0 makes a new undici Agent (`createDispatcher`) for every API call, so every call
 * opens a new TLS connection: at 100 Lease renewals a second that alone cost clusterTree most of
 * a core (measured with 1.4, which did the same with an https.Agent). Watches get theirs the same
 * way; 2.0 caches only the https.Agents of WebSockets. This makes one KubeConfig keep one
 * dispatcher per cluster and user, whose connections every call and watch reuses (HTTP/2 with
 * the API server, which undici offers by default and kube-apiserver prefers). `createDispatcher` is private, so this checks
 * it is there and otherwise leaves the KubeConfig as it is; `test/unit/kubeClient.test.ts` counts
 * the TLS connections with and without it and says when upstream no longer needs it.
 */
export function reuseConnections(kc: KubeConfig): KubeConfig {
  const target = kc as unknown as Reusing;
  const original = target.createDispatcher;
  if (typeof original !== 'function' || target.kosmosReused) return kc;
  const dispatchers = new Map<string, unknown>();
  let closed = false;
  target.kosmosClose = async () => {
    closed = true;
    const all = [...dispatchers.values()] as ({ destroy?: () => Promise<void> } | undefined)[];
    dispatchers.clear();
    // Destroyed, not closed: a request still running is ended now, not awaited (undici's close
    // would wait for it, up to its 300 s timeouts).
    await Promise.all(all.map((d) => (d?.destroy ? d.destroy().catch(() => undefined) : Promise.resolve())));
  };
  target.createDispatcher = (cluster, options) => {
    if (closed) throw new Error('this client has been closed');
    const key = JSON.stringify([cluster?.name ?? '', kc.getCurrentUser()?.name ?? '']);
    if (!dispatchers.has(key)) dispatchers.set(key, original.call(kc, cluster, options));
    return dispatchers.get(key);
  };
  target.kosmosReused = true;
  return kc;
}

/**
 * Closes the connections a KubeConfig of `reuseConnections` keeps (a tree of a shared clusterTree
 * process that stops: its process goes on); a later call through it fails ("closed").
 */
export async function closeConnections(kc: KubeConfig): Promise<void> {
  await (kc as unknown as Reusing).kosmosClose?.();
}
