/**
 * @kubernetes/client-node 1.4 builds a new https.Agent for every request, so every API call opens
 * a new TLS connection: at 100 Lease renewals a second that alone cost clusterTree most of a
 * core. This makes one KubeConfig hand out one keep-alive agent instead, so calls reuse
 * connections. It replaces a private method, so it checks the method is there and otherwise
 * leaves the KubeConfig as it is.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Agent } from 'node:https';

type AgentFactory = (cluster: unknown, options: Record<string, unknown>) => Agent;

export function reuseConnections(kc: KubeConfig): KubeConfig {
  const target = kc as unknown as { createAgent?: AgentFactory };
  const original = target.createAgent;
  if (typeof original !== 'function') return kc;
  let agent: Agent | undefined;
  target.createAgent = (cluster, options) =>
    (agent ??= original.call(kc, cluster, { ...options, keepAlive: true }));
  return kc;
}
