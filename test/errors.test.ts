import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES } from 'grpc-kube/internal/errors.js';

test('every error code is documented in docs/errors.md', () => {
  const doc = readFileSync(fileURLToPath(new URL('../../docs/errors.md', import.meta.url)), 'utf8');
  const missing = Object.keys(ERROR_CODES).filter((code) => !doc.includes(`\`${code}\``));
  assert.deepEqual(missing, []);
});
