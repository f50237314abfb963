// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox: no Node built-ins, no Kubernetes
    // client, no activity implementations (types only).
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['node:*'], message: 'Node built-ins are not allowed in workflow code.' },
            {
              group: ['@kubernetes/*', '@temporalio/client', '@temporalio/worker', '@temporalio/activity'],
              message: 'Workflow code may import only @temporalio/workflow and types.',
            },
            {
              group: ['../activities/*', '../runtime/*', '../pki/*', '../watcher/*', '../worker/*'],
              allowTypeImports: true,
              message: 'Workflows import activity types only.',
            },
          ],
          paths: ['fs', 'path', 'os', 'child_process', 'net', 'http', 'https', 'crypto'],
        },
      ],
    },
  },
  {
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
