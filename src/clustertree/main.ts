#!/usr/bin/env node
/**
 * clusterTree: `node dist/src/clustertree/main.js --config <file>` serves one tenant;
 * `--tenants <dir>` serves every tenant registered in that directory (a shared process, ADR 12
 * decision 13, ./host.ts). The runtime starts and supervises it like any other component; each
 * tenant's status port answers /readyz 200 once its first full sync is done, /status reports
 * counters (JSON).
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { createLogger } from '../worker/logger.js';
import { ClusterTreeConfig } from './config.js';
import { TreeHost } from './host.js';
import { serveTenant } from './serve.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string' }, tenants: { type: 'string' } } });
  if (!values.config === !values.tenants)
    throw new Error('usage: clustertree --config <file> | --tenants <dir>');
  let stopping = false;
  const onSignal = (stop: () => Promise<void>, log: ReturnType<typeof createLogger>) => {
    const handler = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal });
      void stop().finally(() => process.exit(0));
    };
    process.on('SIGTERM', () => handler('SIGTERM'));
    process.on('SIGINT', () => handler('SIGINT'));
    process.on('unhandledRejection', (e) => log.error('unhandled rejection', { error: String(e) }));
  };

  if (values.tenants) {
    const log = createLogger({}, { component: 'clustertree-host' });
    const host = new TreeHost(values.tenants, log);
    onSignal(() => host.stop(), log);
    log.info('serving the tenants registered', { dir: values.tenants });
    await host.start();
    return;
  }
  const cfg = ClusterTreeConfig.parse(JSON.parse(await readFile(values.config!, 'utf8')));
  const log = createLogger(
    {},
    { component: 'clustertree', vc: `${cfg.tenant.namespace}/${cfg.tenant.name}` },
  );
  const served = await serveTenant(cfg, log);
  onSignal(() => served.stop(), log);
  await served.started;
}

main().catch((e: unknown) => {
  process.stderr.write(`clustertree: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
