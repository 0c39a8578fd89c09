// CSDS (gRFC A40) on our control plane, asked by a real grpc-js CSDS client: a real grpc-js-xds
// client's resources show ACKED with their versions and contents; a raw ADS stream that NACKs shows
// NACKED with the client's error_detail; a name never sent shows REQUESTED; node_matchers select by
// node id; a regex matcher is refused.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { CDS, EDS, LDS, RDS } from '@grpc-kube/xds/internal/protos.js';
import { csdsServiceDefinition, type ClientStatusRequest } from '@grpc-kube/xds/internal/csds.js';
import { xdsCommand } from '@grpc-kube/cli/internal/xds.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { newEchoClient, startEchoServer, who, type Echo, type EchoServer } from '../helpers/echo.js';
import { nextEvent, openAds, putRoute, registerXdsClient, routeObject } from './fixture.js';

interface XdsConfig {
  type_url: string;
  name: string;
  version_info?: string;
  client_status?: string;
  config_status?: string;
  error_state?: { details?: string; version_info?: string };
  xds_config?: { type_url?: string; value?: Uint8Array };
  last_updated?: { seconds?: string | number };
}
interface ClientConfig {
  node?: { id?: string; locality?: { zone?: string } };
  generic_xds_configs?: XdsConfig[];
}
interface Response {
  config?: ClientConfig[];
}
type Csds = grpc.Client & {
  FetchClientStatus(
    req: ClientStatusRequest,
    cb: (err: grpc.ServiceError | null, res?: Response) => void,
  ): void;
  StreamClientStatus(): grpc.ClientDuplexStream<ClientStatusRequest, Response>;
};

let api: EmbeddedApiServer;
let cp: XdsControlPlane;
let client: Echo;
let csds: Csds;
let port: number;
const servers: EchoServer[] = [];

function fetch(req: ClientStatusRequest = {}): Promise<Response> {
  return new Promise((resolve, reject) =>
    csds.FetchClientStatus(req, (err, res) => (err ? reject(err) : resolve(res ?? {}))),
  );
}

function configOf(res: Response, nodeId: string): ClientConfig | undefined {
  return res.config?.find((c) => c.node?.id === nodeId);
}

before(async () => {
  api = await startApi();
  const s1 = await startEchoServer('app-1', '127.0.0.31');
  port = s1.port;
  servers.push(s1);
  new SliceWriter(api, 'app', port).put('app-a', [{ ip: '127.0.0.31' }]);
  putRoute(api, routeObject('app', 'app', port, [{ service: 'app', weight: 1 }]));
  cp = await XdsControlPlane.start({ kubeConfigYaml: api.kubeConfigYaml(), log: () => {} });
  await registerXdsClient(cp.address, 'csds-node', 'zone-c');
  client = newEchoClient(`xds:///app.default:${port}`);
  await until(
    async () => {
      try {
        return (await who(client, 1000)).server === 'app-1';
      } catch {
        return false;
      }
    },
    30_000,
    50,
  );
  const Client = grpc.makeGenericClientConstructor(csdsServiceDefinition(), 'Csds');
  csds = new Client(cp.address, grpc.credentials.createInsecure()) as unknown as Csds;
});

after(async () => {
  csds?.close();
  client?.close();
  await cp?.close();
  for (const s of servers) s.kill();
  await api?.stop();
});

test('a grpc-js-xds client: every resource it subscribed, ACKED at the version it holds, with contents', async () => {
  // The client ACKs after it applies: wait until every type it holds is ACKed, as CSDS will say.
  await until(
    async () => {
      const c = configOf(await fetch(), 'csds-node');
      const types = new Set(
        (c?.generic_xds_configs ?? []).filter((x) => x.client_status === 'ACKED').map((x) => x.type_url),
      );
      return [LDS, RDS, CDS, EDS].every((t) => types.has(t));
    },
    30_000,
    50,
  );
  const c = configOf(await fetch(), 'csds-node');
  assert.equal(c?.node?.locality?.zone, 'zone-c');
  const byType = new Map((c?.generic_xds_configs ?? []).map((x) => [x.type_url, x]));
  const names: Record<string, string> = {
    [LDS]: `app.default:${port}`,
    [CDS]: `default/app:${port}`,
    [EDS]: `default/app:${port}`,
  };
  for (const type of [LDS, RDS, CDS, EDS] as const) {
    const x = byType.get(type);
    assert.ok(x, `an entry for ${type}`);
    if (names[type] !== undefined) assert.equal(x.name, names[type]);
    assert.equal(x.client_status, 'ACKED');
    assert.equal(x.config_status, 'SYNCED');
    assert.equal(x.version_info, cp.cache.version(type));
    assert.equal(x.xds_config?.type_url, type);
    assert.ok((x.xds_config?.value?.length ?? 0) > 0);
    assert.ok(Number(x.last_updated?.seconds) > 0);
  }
  // exclude_resource_contents drops the resources, not the status.
  const bare = configOf(await fetch({ exclude_resource_contents: true }), 'csds-node');
  assert.ok(
    bare?.generic_xds_configs?.every((x) => x.xds_config === undefined && x.client_status === 'ACKED'),
  );
});

test('a NACK shows NACKED with the client error and the rejected version; a name never sent is REQUESTED', async (t) => {
  const raw = openAds(cp.address);
  t.after(() => raw.close());
  const listener = `app.default:${port}`;
  raw.send({ type: LDS, names: [listener], nodeId: 'raw-nacker', namespace: 'default' });
  const r = await raw.next();
  const nacked = nextEvent(cp, (e) => e.kind === 'nack' && e.node?.id === 'raw-nacker');
  raw.send({ type: LDS, names: [listener], nonce: r.nonce, error: 'listener rejected: bad filter chain' });
  await nacked;
  // An RDS name nothing provides: asked for, never sent.
  raw.send({ type: RDS, names: [`nothere.default:${port}`] });
  await nextEvent(cp, (e) => e.kind === 'request' && e.node?.id === 'raw-nacker' && e.type === RDS);

  const c = configOf(await fetch({ node_matchers: [{ node_id: { exact: 'raw-nacker' } }] }), 'raw-nacker');
  t.diagnostic(`CSDS for raw-nacker: ${JSON.stringify(c)}`);
  const lds = c?.generic_xds_configs?.find((x) => x.type_url === LDS);
  assert.equal(lds?.name, listener);
  assert.equal(lds?.client_status, 'NACKED');
  assert.equal(lds?.config_status, 'ERROR');
  assert.equal(lds?.error_state?.details, 'listener rejected: bad filter chain');
  assert.equal(lds?.error_state?.version_info, r.version_info);
  // It ACKed nothing: it holds no version.
  assert.equal(lds?.version_info ?? '', '');
  const rds = c?.generic_xds_configs?.find((x) => x.type_url === RDS);
  assert.deepEqual(
    [rds?.name, rds?.client_status, rds?.config_status],
    [`nothere.default:${port}`, 'REQUESTED', 'NOT_SENT'],
  );
  // ACKing the same response clears the error.
  const acked = nextEvent(cp, (e) => e.kind === 'ack' && e.node?.id === 'raw-nacker');
  raw.send({ type: LDS, names: [listener], nonce: r.nonce, version: r.version_info });
  await acked;
  const after = configOf(await fetch(), 'raw-nacker')?.generic_xds_configs?.find((x) => x.type_url === LDS);
  assert.equal(after?.client_status, 'ACKED');
  assert.equal(after?.error_state, undefined);
  assert.equal(after?.version_info, r.version_info);
});

test('node_matchers select nodes by id; StreamClientStatus answers each request', async () => {
  const ids = async (req: ClientStatusRequest): Promise<string[]> =>
    ((await fetch(req)).config ?? []).map((c) => c.node?.id ?? '').sort();
  assert.deepEqual(await ids({ node_matchers: [{ node_id: { exact: 'nobody' } }] }), []);
  assert.deepEqual(await ids({ node_matchers: [{ node_id: { prefix: 'CSDS', ignore_case: true } }] }), [
    'csds-node',
  ]);
  assert.deepEqual(
    await ids({ node_matchers: [{ node_id: { suffix: '-node' } }, { node_id: { exact: 'nobody' } }] }),
    ['csds-node'],
  );
  const stream = csds.StreamClientStatus();
  const got: Response[] = [];
  const two = new Promise<void>((resolve, reject) => {
    stream.on('data', (r: Response) => {
      got.push(r);
      if (got.length === 2) resolve();
    });
    stream.on('error', reject);
  });
  stream.write({ node_matchers: [{ node_id: { exact: 'csds-node' } }] });
  stream.write({ node_matchers: [{ node_id: { exact: 'nobody' } }] });
  await two;
  stream.end();
  assert.deepEqual(
    got.map((r) => (r.config ?? []).map((c) => c.node?.id)),
    [['csds-node'], []],
  );
});

test('a regex or metadata node matcher is refused with UNIMPLEMENTED, naming the field', async () => {
  await assert.rejects(
    fetch({ node_matchers: [{ node_id: { safe_regex: { regex: '(a+)+$' } } }] }),
    (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED && /safe_regex/.test(e.details),
  );
  await assert.rejects(
    fetch({ node_matchers: [{ node_metadatas: [{ path: [{ key: 'k' }] }] }] }),
    (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED && /node_metadatas/.test(e.details),
  );
});

test('grpc-kube xds status --address prints each resource of each client, and --node one node', async () => {
  const lines: string[] = [];
  const errs: string[] = [];
  const io = { out: (l: string) => lines.push(l), err: (l: string) => errs.push(l) };
  assert.equal(
    await xdsCommand(['status', '--address', cp.address, '--node', 'csds-node'], io),
    0,
    errs.join('\n'),
  );
  assert.equal(lines[0], '1 client(s)');
  assert.ok(
    lines.some(
      (l) => l === `csds-node  Listener  app.default:${port}  version ${cp.cache.version(LDS)}  ACKED`,
    ),
    lines.join('\n'),
  );
  assert.equal(lines.length, 1 + 4);
  lines.length = 0;
  assert.equal(await xdsCommand(['status', '--address', cp.address, '--json', '--node', 'nobody'], io), 0);
  assert.deepEqual(JSON.parse(lines[0] ?? '').config ?? [], []);
  assert.equal(await xdsCommand(['status'], io), 2);
  assert.ok(errs.some((l) => l.includes('--address')));
});
