import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        // Workflows against a real Temporal dev server, with stubbed or real activities and a
        // real host control plane; servers start once per run in the global setup.
        test: {
          name: 'integration',
          include: ['test/workflows/**/*.test.ts', 'test/integration/**/*.test.ts'],
          globalSetup: ['test/support/globalSetup.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
