/**
 * Small helpers around @kubernetes/client-node shared by the operator and clusterTree: API
 * error codes, and connection reuse.
 */
import { ApiException, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import type { Agent } from 'node:https';

/** The HTTP status of a failed API call; undefined for any other error. */
export const statusCode = (e: unknown): number | undefined =>
  e instanceof ApiException ? e.code : undefined;
export const isNotFound = (e: unknown): boolean => statusCode(e) === 404;
export const isConflict = (e: unknown): boolean => statusCode(e) === 409;

/** The message of an API error's Status body (any other error as text). */
export function apiMessage(e: unknown): string {
  if (!(e instanceof ApiException)) return String(e);
  try {
    const body = (typeof e.body === 'string' ? JSON.parse(e.body) : e.body) as { message?: string };
    return body.message ?? `HTTP ${e.code}`;
  } catch {
    return `HTTP ${e.code}`;
  }
}

/** Request options for a JSON merge patch (client-node defaults to JSON patch). */
export const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** For `.catch()`: an API error with one of `codes` becomes undefined, anything else is rethrown. */
export const ignoreStatus =
  (...codes: number[]) =>
  (e: unknown): undefined => {
    if (codes.includes(statusCode(e) ?? 0)) return undefined;
    throw e;
  };

type AgentFactory = (cluster: unknown, options: Record<string, unknown>) => Agent;

/**
 * client-node 1.4 builds a new https.Agent for every request, so every API call opens a new TLS
 * connection: at 100 Lease renewals a second that alone cost clusterTree most of a core. This
 * makes one KubeConfig hand out one keep-alive agent instead, so calls reuse connections. It
 * replaces a private method, so it checks the method is there and otherwise leaves the
 * KubeConfig as it is.
 */
export function reuseConnections(kc: KubeConfig): KubeConfig {
  const target = kc as unknown as { createAgent?: AgentFactory; kosmosReused?: true };
  const original = target.createAgent;
  if (typeof original !== 'function' || target.kosmosReused) return kc;
  let agent: Agent | undefined;
  target.createAgent = (cluster, options) =>
    (agent ??= original.call(kc, cluster, { ...options, keepAlive: true }));
  target.kosmosReused = true;
  return kc;
}
