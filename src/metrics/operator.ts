/**
 * The operator's Prometheus metrics (prom-client): how long each workflow step (activity) takes and
 * how it ends, compensations, VirtualClusters by phase, and the process's own figures (CPU, RSS,
 * event loop). Served on `/metrics` by serveMetrics; each operator has its own registry, so two in
 * one process (tests) do not collide.
 */
import type { Context as ActivityContext } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { Phase } from '../api/virtualCluster.js';

/** Seconds: a status write takes milliseconds, a control-plane start seconds, a drain minutes. */
const STEP_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly activityDuration = new Histogram({
    name: 'kosmos_vc_activity_duration_seconds',
    help: 'Duration of each activity execution (a workflow step, an undo, a status write), by activity and outcome',
    labelNames: ['activity', 'outcome'] as const,
    buckets: STEP_BUCKETS,
    registers: [this.registry],
  });
  readonly compensations = new Counter({
    name: 'kosmos_vc_compensations_total',
    help: 'Provisioning runs that failed and undid their completed steps',
    registers: [this.registry],
  });

  /** `processMetrics`: also CPU, RSS, heap, event loop (monitors that run for the process's life). */
  constructor({ processMetrics = true }: { processMetrics?: boolean } = {}) {
    if (processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'kosmos_vc_operator_' });
  }

  /**
   * VirtualClusters by phase, read from `phases()` on every scrape (the watcher's view). Every
   * phase is reported, with 0 where none is in it, so a rate or an alert sees it go to zero.
   */
  trackPhases(phases: () => Promise<(string | undefined)[]>): void {
    new Gauge({
      name: 'kosmos_vc_virtualclusters',
      help: 'VirtualClusters by status phase (Pending: not reported yet)',
      labelNames: ['phase'] as const,
      registers: [this.registry],
      async collect() {
        const counts = new Map<string, number>([...Phase.options, 'Pending'].map((p) => [p, 0]));
        for (const p of await phases()) counts.set(p ?? 'Pending', (counts.get(p ?? 'Pending') ?? 0) + 1);
        this.reset();
        for (const [phase, n] of counts) this.set({ phase }, n);
      },
    });
  }

  /**
   * The worker's activity interceptor: times every execution, by outcome (`cancelled` when it was
   * cancelled or timed out, not failed); counts compensation runs once each, when their status
   * is written (a status write is retried until it succeeds).
   */
  interceptor(): ActivityInterceptorsFactory {
    return (ctx: ActivityContext) => ({
      inbound: {
        execute: async (input, next) => {
          const activity = ctx.info.activityType;
          const end = this.activityDuration.startTimer({ activity });
          try {
            const result = await next(input);
            end({ outcome: 'success' });
            if (activity === 'reportStatus' && isCompensating(input.args[0])) this.compensations.inc();
            return result;
          } catch (e) {
            const cancelled = e instanceof CancelledFailure || ctx.cancellationSignal.aborted;
            end({ outcome: cancelled ? 'cancelled' : 'failure' });
            throw e;
          }
        },
      },
    });
  }
}

/** The status the workflow writes when it starts undoing a failed provisioning. */
function isCompensating(arg: unknown): boolean {
  return (arg as { status?: { reason?: string } } | undefined)?.status?.reason === 'Compensating';
}

/**
 * `/metrics` of a registry over plain HTTP (404 elsewhere); port 0 picks a free one, host ''
 * listens on every interface.
 */
export async function serveMetrics(
  registry: Registry,
  port: number,
  host = '127.0.0.1',
): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end('not found: /metrics is here\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
      (e: unknown) => res.writeHead(500).end(`${(e as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (host) server.listen(port, host, resolve);
    else server.listen(port, resolve);
  });
  const { port: bound } = server.address() as AddressInfo;
  const shown = host || '127.0.0.1';
  return {
    url: `http://${shown.includes(':') ? `[${shown}]` : shown}:${bound}/metrics`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
