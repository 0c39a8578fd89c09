// Interop: a grpc-go xDS client (built here from the Go module proxy, outside the repo, cached in
// ~/.cache/grpc-kube/xds-interop) against our control plane and real grpc-js servers: it must accept
// every resource (no NACK) and follow the GRPCRoute's 80/20 split. Skipped, with the reason, when Go
// or the module download is unavailable.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { xdsBootstrapJson } from '@grpc-kube/xds/internal/bootstrap.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import type { AdsEvent } from '@grpc-kube/xds/internal/ads-server.js';
import { SliceWriter, startApi } from '../helpers/kube.js';
import { startEchoServer, type EchoServer } from '../helpers/echo.js';
import { putRoute, routeObject } from './fixture.js';

const GO_MAIN =
  '// A tiny grpc-go xDS client for grpc-kube\'s interop test: dials xds:///<target>, sends N unary\n// RPCs to /grpckube.test.Echo/Who (JSON bodies, raw codec) and prints {"by":{server:count},"failed":n}.\npackage main\n\nimport (\n\t"context"\n\t"encoding/json"\n\t"flag"\n\t"fmt"\n\t"os"\n\t"time"\n\n\t"google.golang.org/grpc"\n\t"google.golang.org/grpc/credentials/insecure"\n\t"google.golang.org/grpc/encoding"\n\t_ "google.golang.org/grpc/xds"\n)\n\ntype rawCodec struct{}\n\nfunc (rawCodec) Marshal(v any) ([]byte, error)      { return *(v.(*[]byte)), nil }\nfunc (rawCodec) Unmarshal(b []byte, v any) error    { *(v.(*[]byte)) = append([]byte(nil), b...); return nil }\nfunc (rawCodec) Name() string                       { return "raw" }\n\nvar _ encoding.Codec = rawCodec{}\n\nfunc main() {\n\ttarget := flag.String("target", "", "xds:///svc.ns:port")\n\tn := flag.Int("n", 100, "RPCs")\n\tflag.Parse()\n\tconn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))\n\tif err != nil {\n\t\tfmt.Fprintln(os.Stderr, err)\n\t\tos.Exit(1)\n\t}\n\tdefer conn.Close()\n\tby := map[string]int{}\n\tfailed := 0\n\tlastErr := ""\n\tfor i := 0; i < *n; i++ {\n\t\tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)\n\t\tin := []byte("{}")\n\t\tvar out []byte\n\t\terr := conn.Invoke(ctx, "/grpckube.test.Echo/Who", &in, &out, grpc.ForceCodec(rawCodec{}), grpc.WaitForReady(true))\n\t\tcancel()\n\t\tif err != nil {\n\t\t\tfailed++\n\t\t\tlastErr = err.Error()\n\t\t\tcontinue\n\t\t}\n\t\tvar r struct{ Server string `json:"server"` }\n\t\t_ = json.Unmarshal(out, &r)\n\t\tby[r.Server]++\n\t}\n\tres, _ := json.Marshal(map[string]any{"by": by, "failed": failed, "lastError": lastErr})\n\tfmt.Println(string(res))\n}\n';
const GO_MOD =
  'module grpckube/xdsinterop\n\ngo 1.25.0\n\nrequire google.golang.org/grpc v1.83.2\n\nrequire (\n\tcel.dev/expr v0.25.2 // indirect\n\tcloud.google.com/go/auth v0.18.2 // indirect\n\tcloud.google.com/go/compute/metadata v0.9.0 // indirect\n\tgithub.com/cespare/xxhash/v2 v2.3.0 // indirect\n\tgithub.com/cncf/xds/go v0.0.0-20260202195803-dba9d589def2 // indirect\n\tgithub.com/envoyproxy/go-control-plane/envoy v1.37.0 // indirect\n\tgithub.com/envoyproxy/protoc-gen-validate v1.3.3 // indirect\n\tgithub.com/felixge/httpsnoop v1.0.4 // indirect\n\tgithub.com/go-jose/go-jose/v4 v4.1.4 // indirect\n\tgithub.com/go-logr/logr v1.4.3 // indirect\n\tgithub.com/go-logr/stdr v1.2.2 // indirect\n\tgithub.com/google/s2a-go v0.1.9 // indirect\n\tgithub.com/googleapis/enterprise-certificate-proxy v0.3.11 // indirect\n\tgithub.com/googleapis/gax-go/v2 v2.17.0 // indirect\n\tgithub.com/planetscale/vtprotobuf v0.6.1-0.20240319094008-0393e58bdf10 // indirect\n\tgithub.com/spiffe/go-spiffe/v2 v2.7.0 // indirect\n\tgo.opentelemetry.io/auto/sdk v1.2.1 // indirect\n\tgo.opentelemetry.io/contrib/instrumentation/net/http/otelhttp v0.61.0 // indirect\n\tgo.opentelemetry.io/otel v1.44.0 // indirect\n\tgo.opentelemetry.io/otel/metric v1.44.0 // indirect\n\tgo.opentelemetry.io/otel/trace v1.44.0 // indirect\n\tgolang.org/x/crypto v0.55.0 // indirect\n\tgolang.org/x/net v0.58.0 // indirect\n\tgolang.org/x/oauth2 v0.36.0 // indirect\n\tgolang.org/x/sync v0.22.0 // indirect\n\tgolang.org/x/sys v0.47.0 // indirect\n\tgolang.org/x/text v0.41.0 // indirect\n\tgoogle.golang.org/genproto/googleapis/api v0.0.0-20260526163538-3dc84a4a5aaa // indirect\n\tgoogle.golang.org/genproto/googleapis/rpc v0.0.0-20260526163538-3dc84a4a5aaa // indirect\n\tgoogle.golang.org/protobuf v1.36.11 // indirect\n)\n';
const DIR = join(homedir(), '.cache', 'grpc-kube', 'xds-interop');
const BIN = join(DIR, 'xds-client');

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs, maxBuffer: 16 << 20 },
      (err, stdout, stderr) =>
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : 1) : 0,
          stdout,
          stderr: stderr || String(err ?? ''),
        }),
    );
  });
}

/** Build the client unless the cached binary matches the source; returns why not, or undefined. */
async function buildGoClient(): Promise<string | undefined> {
  const hash = createHash('sha256').update(GO_MAIN).update(GO_MOD).digest('hex');
  const stamp = join(DIR, 'source.sha256');
  if (existsSync(BIN) && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash) return undefined;
  mkdirSync(DIR, { recursive: true });
  writeFileSync(join(DIR, 'main.go'), GO_MAIN);
  writeFileSync(join(DIR, 'go.mod'), GO_MOD);
  const env = { ...process.env, GOFLAGS: '-mod=mod' };
  const tidy = await run('go', ['mod', 'tidy'], { cwd: DIR, env, timeoutMs: 150_000 });
  if (tidy.code !== 0) return `go mod tidy failed: ${tidy.stderr.slice(-400)}`;
  const build = await run('go', ['build', '-o', BIN, '.'], { cwd: DIR, env, timeoutMs: 150_000 });
  if (build.code !== 0) return `go build failed: ${build.stderr.slice(-400)}`;
  writeFileSync(stamp, hash);
  return undefined;
}

let skip: string | undefined;
let api: EmbeddedApiServer;
let cp: XdsControlPlane;
let port: number;
const servers: EchoServer[] = [];
const events: AdsEvent[] = [];

before(async () => {
  skip = await buildGoClient().catch((e: unknown) => `Go build unavailable: ${String(e)}`);
  if (skip) return;
  api = await startApi();
  const a = await startEchoServer('blue', '127.0.0.41');
  port = a.port;
  servers.push(a, await startEchoServer('green', '127.0.0.42', port));
  new SliceWriter(api, 'blue', port).put('blue-a', [{ ip: '127.0.0.41' }]);
  new SliceWriter(api, 'green', port).put('green-a', [{ ip: '127.0.0.42' }]);
  putRoute(
    api,
    routeObject('web', 'web', port, [
      { service: 'blue', weight: 80 },
      { service: 'green', weight: 20 },
    ]),
  );
  cp = await XdsControlPlane.start({ kubeConfigYaml: api.kubeConfigYaml(), log: () => {} });
  cp.onAdsEvent((e) => events.push(e));
});

after(async () => {
  await cp?.close();
  for (const s of servers) s.kill();
  await api?.stop();
});

test('a grpc-go xDS client accepts our resources and follows an 80/20 GRPCRoute split', async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  const N = 1000;
  const r = await run(BIN, ['-target', `xds:///web.default:${port}`, '-n', String(N)], {
    env: {
      ...process.env,
      GRPC_XDS_BOOTSTRAP_CONFIG: xdsBootstrapJson({
        server: cp.address,
        nodeId: 'go-interop',
        zone: 'zone-a',
      }),
    },
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as {
    by: Record<string, number>;
    failed: number;
    lastError: string;
  };
  console.log(`grpc-go over xDS: ${JSON.stringify(res)}`);
  assert.equal(res.failed, 0, res.lastError);
  const green = (100 * (res.by['green'] ?? 0)) / N;
  assert.ok(Math.abs(green - 20) <= 5, `green share ${green}%`);
  const fromGo = events.filter((e) => 'node' in e && e.node?.id === 'go-interop');
  assert.equal(fromGo.filter((e) => e.kind === 'nack').length, 0);
  const acked = new Set(
    fromGo.flatMap((e) => (e.kind === 'ack' ? [e.type.slice(e.type.lastIndexOf('.') + 1)] : [])),
  );
  assert.deepEqual([...acked].sort(), ['Cluster', 'ClusterLoadAssignment', 'Listener', 'RouteConfiguration']);
});
