// `import 'grpc-kube/register'` in a process of its own: the resolvers work at once, and the
// grpc_kube_* policies — not imported at start-up — are loaded with the first kubernetes: channel,
// whose first resolution waits for them, so a channel naming grpc_kube_p2c works without any other
// import of grpc-kube.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SliceWriter, startApi } from '../helpers/kube.js';
import { startEchoServer } from '../helpers/echo.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** A repository path as a JS string literal, for the child's imports (it runs from a temp dir). */
const at = (p: string): string => JSON.stringify(join(ROOT, p));

test('register: channels naming grpc_kube_p2c work; the policy is loaded with the first channel', async (t) => {
  const api = await startApi();
  t.after(() => api.close());
  const echo = await startEchoServer('pod-a', '127.0.0.1');
  t.after(() => echo.kill());
  new SliceWriter(api, 'hello', echo.port).put('hello-1', [{ ip: '127.0.0.1' }]);
  const dir = mkdtempSync(join(tmpdir(), 'gk-register-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'kubeconfig.yaml'), api.kubeConfigYaml());
  writeFileSync(
    join(dir, 'client.mjs'),
    `const { experimental } = await import(${at('node_modules/@grpc/grpc-js/build/src/index.js')});
await import(${at('packages/grpc-kube/dist/src/register.js')});
// The same loader, slowed down: the first resolution must wait for it, however fast its feed is.
const { loadPoliciesWithFirstChannel } = await import(${at('packages/grpc-kube/dist/src/resolver/setup.js')});
loadPoliciesWithFirstChannel(() => new Promise((r) => setTimeout(r, 500)).then(() => import(${at('packages/grpc-kube/dist/src/balancer/index.js')})));
const { newEchoClient, who } = await import(${at('dist/test/helpers/echo.js')});
const atStart = experimental.isLoadBalancerNameRegistered('grpc_kube_p2c');
const p2c = { 'grpc-kube.lb_policy': 'grpc_kube_p2c' };
// First a dns-poll: channel to an address, whose feed answers before the policies could be imported.
const byAddress = await who(newEchoClient('dns-poll:///127.0.0.1:${echo.port}', p2c), 20000);
const byService = await who(newEchoClient('kubernetes:///hello.default:grpc', p2c), 20000);
const after = experimental.isLoadBalancerNameRegistered('grpc_kube_p2c');
console.log(JSON.stringify({ atStart, after, servers: [byAddress.server, byService.server] }));
process.exit(0);
`,
  );
  const { stdout } = await run(process.execPath, [join(dir, 'client.mjs')], {
    cwd: dir,
    env: { PATH: process.env.PATH, HOME: dir, KUBECONFIG: join(dir, 'kubeconfig.yaml') },
    timeout: 60_000,
  });
  assert.deepEqual(JSON.parse(stdout), { atStart: false, after: true, servers: ['pod-a', 'pod-a'] });
});
