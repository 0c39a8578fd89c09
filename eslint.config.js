// Lint config: typescript-eslint recommended on every TypeScript file; build outputs ignored; and the
// package boundaries of the workspaces (see packageBoundaries below).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';
import { packageBoundaries } from './scripts/eslint-package-boundaries.js';

export default tseslint.config(
  { ignores: ['**/dist/**', 'node_modules/**', '.lab/**', 'coverage/**', 'deploy/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['**/*.ts', '**/*.js', '**/*.mjs'],
    plugins: { 'grpc-kube': { rules: { 'package-boundaries': packageBoundaries } } },
    rules: { 'grpc-kube/package-boundaries': 'error' },
  },
);
