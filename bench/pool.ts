/**
 * The warm pool (issue 10, target 3's moonshot; ADR 12, decision 15): `kubectl apply` -> Ready
 * with one node promoted, for a tenant handed a control plane the worker started ahead, against
 * the floor of `speed` (the same components started directly, one Node made Ready). Rounds
 * alternate, and each starts once the pool is full again, so that neither side shares the
 * machine with a slot being made. Target: Ready under 2 s.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tenantId } from '../src/activities/index.js';
import type { TenantAllocation } from '../src/activities/types.js';
import { ProcessRuntime } from '../src/runtime/processRuntime.js';
import { createLogger } from '../src/worker/logger.js';
import { workflowIdFor } from '../src/workflows/definitions.js';
import { activityTimes, deleteVC, percentile, say, stepDurations, waitFor } from './common.js';
import { ratio, type Scenario } from './scenario.js';
import { floorRound, productRound, writeTimesPlot } from './speed.js';

const median = (xs: number[]) => percentile(xs, 50);
export const POOL_SIZE = 1;

export const pool: Scenario = {
  summary:
    'apply -> Ready (one node) from a warm pool of control planes vs the same components started directly',
  quick: { rounds: 3 },
  full: { rounds: 7 },
  warmPool: POOL_SIZE,
  async run({ env, out, oneProcess }, o) {
    const { root, operator, operatorOptions } = env;
    const host = operator.host;
    const warm = operator.warmPool;
    if (!warm) throw new Error('the operator has no warm pool');
    const direct = new ProcessRuntime({
      root: join(root, 'direct'),
      logger: createLogger({ level: 'error' }),
    });
    const full = () =>
      waitFor(
        'the warm pool full',
        async () => ((await warm.tickets()).length >= POOL_SIZE ? true : undefined),
        300_000,
      );
    const floorInit: number[] = [];
    const floorReady: number[] = [];
    const init: number[] = [];
    const ready: number[] = [];
    let claimed = 0;
    let steps: Record<string, number> = {};
    try {
      for (let round = 1; round <= o.rounds!; round++) {
        await full();
        const floor = await floorRound(env, direct, round, oneProcess);
        floorInit.push(floor.initMs);
        floorReady.push(floor.readyMs);

        await full();
        const name = `pool-${round}`;
        const product = await productRound(host, name);
        init.push(product.initMs);
        ready.push(product.readyMs);
        const ref = { namespace: 'default', name, uid: product.uid };
        const a = JSON.parse(
          await readFile(join(operatorOptions.stateDir, 'tenants', tenantId(ref), 'allocation.json'), 'utf8'),
        ) as TenantAllocation;
        if (a.id !== tenantId(ref)) claimed++;
        if (round === o.rounds)
          steps = stepDurations(await activityTimes(operator.client, workflowIdFor(ref)));
        await deleteVC(host, name);
        say(
          `round ${round}/${o.rounds}: floor ${floor.initMs.toFixed(0)} / ${floor.readyMs.toFixed(0)} ms, from the pool ${product.initMs.toFixed(0)} / ${product.readyMs.toFixed(0)} ms${a.id === tenantId(ref) ? ' (not claimed)' : ''}`,
        );
      }
    } finally {
      await direct.shutdown();
    }
    const [fi, fr, pi, pr] = [median(floorInit), median(floorReady), median(init), median(ready)];
    const plot = await writeTimesPlot(
      out,
      'pool',
      `Time to Initialized and to Ready with a warm pool, each of ${o.rounds} rounds (s)`,
      { who: 'from the pool', floorInit, floorReady, init, ready },
    );
    return {
      lines: [
        `warm pool of ${POOL_SIZE}, median of ${o.rounds} (ms)     floor   from the pool   ratio   target`,
        `  -> Initialized (control plane serves)  ${fi.toFixed(0).padStart(6)}   ${pi.toFixed(0).padStart(13)}   ${ratio(pi, fi).padStart(5)}`,
        `  -> Ready (one node Ready)              ${fr.toFixed(0).padStart(6)}   ${pr.toFixed(0).padStart(13)}   ${ratio(pr, fr).padStart(5)}   < 2 s: ${pr < 2000 ? 'met' : 'missed'}`,
        `  rounds served from the pool: ${claimed} of ${o.rounds}`,
        ...(oneProcess
          ? ['  (KOSMOS_VC_ONE_PROCESS: the floor and the pool run kube-control-plane beside etcd)']
          : []),
        '',
        'where the last round went (activity durations from its workflow history, ms)',
        ...Object.entries(steps)
          .sort((a, b) => b[1] - a[1])
          .map(([step, ms]) => `  ${step.padEnd(28)} ${ms.toFixed(0).padStart(6)}`),
        `  plot: ${plot}`,
      ],
      json: {
        poolSize: POOL_SIZE,
        floorShape: oneProcess ? 'one process' : 'four processes',
        floorInitMs: floorInit,
        floorReadyMs: floorReady,
        initMs: init,
        readyMs: ready,
        claimed,
        steps,
      },
    };
  },
};
