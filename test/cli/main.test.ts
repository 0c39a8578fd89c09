// The grpc-kube command's own handling of what a user types: an unknown flag or a stray argument
// names itself and prints the usage (exit 2, no stack trace); --help prints the usage (exit 0).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const MAIN = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));
const run = (...args: string[]) =>
  spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });

test('grpc-kube: bad flags name themselves and print the usage; --help prints it', () => {
  for (const args of [
    ['lab', '--bogus'],
    ['resolve', 'kubernetes:///a.b:1', '--nope'],
    ['proxy', '--mode'],
  ]) {
    const r = run(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^grpc-kube: .*(Unknown option|argument missing)/, args.join(' '));
    assert.match(r.stderr, /usage:\n {2}grpc-kube resolve/);
    assert.doesNotMatch(r.stderr, /\n {4}at /, 'no stack trace');
  }
  const help = run('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout + help.stderr, /grpc-kube lab \[--scenario NAME,\.\.\.\]/);
  // A command's --help lists every flag its parser accepts, each with its help.
  const lab = run('lab', '--help');
  assert.equal(lab.status, 0);
  for (const flag of ['--scenario NAME,…', '--tls', '--manifests', '--client-defaults', '--assert'])
    assert.ok(lab.stdout.includes(`  ${flag}`), `lab --help names ${flag}:\n${lab.stdout}`);
  const resolve = run('resolve', '-h');
  assert.equal(resolve.status, 0);
  assert.match(resolve.stdout, /usage: grpc-kube resolve <target> \[flags\]\n[^]*--kubeconfig FILE/);
  const unknown = run('frobnicate');
  assert.equal(unknown.status, 2);
});
