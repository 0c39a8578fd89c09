// gRFC A29 end to end: a real @grpc/grpc-js-xds client built with XdsChannelCredentials (insecure
// fallback) and a bootstrap with file_watcher certificate providers, our control plane sending
// Clusters with an UpstreamTlsContext, and real grpc-js servers that require client certificates —
// all certificates from one lab CA (and a second, foreign CA for the cases that must fail).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { createCertificateAuthority, type Issued } from '@grpc-kube/lab/internal/lab/x509.js';
import { parseCertificateProviders, xdsServeSettings } from '@grpc-kube/cli/internal/xds.js';
import { parseCommandLine, XDS_SERVE_FLAGS } from '@grpc-kube/cli/internal/options.js';
import { xdsBootstrap, xdsBootstrapJson } from '@grpc-kube/xds/internal/bootstrap.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { checkUpstreamTls, type DownstreamTls, type UpstreamTls } from '@grpc-kube/xds/internal/resources.js';
import { SliceWriter, startApi } from '../helpers/kube.js';
import { eventually } from '../helpers/wait.js';
import { echoService, EchoClient, type Echo, type WhoReply } from '../helpers/echo.js';

const SPIFFE = 'spiffe://lab.grpc-kube/ns/default/sa';
const dir = mkdtempSync(path.join(tmpdir(), 'gk-a29-'));
const ca = createCertificateAuthority('grpc-kube lab CA', 1);
const foreign = createCertificateAuthority('some other CA', 1);

function files(name: string, id: Issued): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  writeFileSync(cert, id.cert);
  writeFileSync(key, id.key);
  return { cert, key };
}

const caFile = path.join(dir, 'ca.crt');
writeFileSync(caFile, ca.cert);
const clientId = files('client', ca.issue('client', { uris: [`${SPIFFE}/client`] }));

/** The SAN every server must carry, as the control plane tells the clients. */
const TLS: UpstreamTls = {
  caInstance: 'lab-ca',
  identityInstance: 'lab-identity',
  subjectAltNames: [{ exact: `${SPIFFE}/good` }],
};

let api: EmbeddedApiServer;
let cp: XdsControlPlane;
let XdsChannelCredentials: new (fallback: grpc.ChannelCredentials) => grpc.ChannelCredentials;
let XdsServerCredentials: new (fallback: grpc.ServerCredentials) => grpc.ServerCredentials;
let XdsServer: new (options?: object) => grpc.Server;
const servers: grpc.Server[] = [];
const clients: grpc.Client[] = [];
const ports = new Map<string, number>();
const served = new Map<string, number>();

/** Answers with the service's name and the URI SAN of the client's certificate. */
function whoHandler(service: string): grpc.UntypedServiceImplementation {
  return {
    who: (call: grpc.ServerUnaryCall<object, WhoReply>, cb: grpc.sendUnaryData<WhoReply>) => {
      served.set(service, (served.get(service) ?? 0) + 1);
      const peer = call.getAuthContext().sslPeerCertificate?.subjectaltname ?? 'none';
      cb(null, { server: `${service} peer=${peer}` });
    },
  };
}

/** A grpc-js server on `ip` behind the Service `service` (one EndpointSlice). */
async function startServer(service: string, ip: string, creds: grpc.ServerCredentials): Promise<void> {
  const server = new grpc.Server();
  server.addService(echoService, whoHandler(service));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${ip}:0`, creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  servers.push(server);
  ports.set(service, port);
  new SliceWriter(api, service, port).put(`${service}-a`, [{ ip }]);
}

/** mTLS server: its certificate from `issuer` with `sans`, clients' certificates checked against `trust`. */
function mtls(issuer: typeof ca, uri: string, trust = ca): grpc.ServerCredentials {
  const id = issuer.issue('server', { uris: [uri], ips: ['127.0.0.1'] });
  return grpc.ServerCredentials.createSsl(
    Buffer.from(trust.cert),
    [{ cert_chain: Buffer.from(id.cert), private_key: Buffer.from(id.key) }],
    true,
  );
}

function call(service: string): Promise<string> {
  const client = new EchoClient(
    `xds:///${service}.default:${ports.get(service)}`,
    new XdsChannelCredentials(grpc.credentials.createInsecure()),
  ) as unknown as Echo;
  clients.push(client);
  return new Promise((resolve, reject) =>
    client.who({}, { deadline: Date.now() + 3000 }, (err, res) => {
      client.close();
      return err ? reject(err) : resolve(res?.server ?? '');
    }),
  );
}

async function settles(service: string, ok: boolean): Promise<string> {
  let last = '';
  await eventually(`${service} ${ok ? 'answers' : 'fails'}`, async () => {
    try {
      last = await call(service);
      return ok;
    } catch (e) {
      last = `${(e as grpc.ServiceError).code}: ${(e as Error).message}`;
      // A deadline is not the refusal awaited: a stalled machine (or a client still waiting for its
      // config) can run out of time on a call that would have answered. Try again.
      return !ok && (e as grpc.ServiceError).code !== grpc.status.DEADLINE_EXCEEDED;
    }
  });
  return last;
}

async function restartControlPlane(
  upstreamTls: UpstreamTls | undefined,
  serverTls?: DownstreamTls,
): Promise<void> {
  const address = cp.address;
  await cp.close();
  cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    address,
    watchRoutes: false,
    log: () => {},
    ...(upstreamTls !== undefined ? { upstreamTls } : {}),
    ...(serverTls !== undefined ? { serverTls } : {}),
  });
}

before(async () => {
  api = await startApi();
  await startServer('good', '127.0.0.31', mtls(ca, `${SPIFFE}/good`));
  await startServer('othersan', '127.0.0.32', mtls(ca, `${SPIFFE}/impostor`));
  await startServer('foreign', '127.0.0.33', mtls(foreign, `${SPIFFE}/good`));
  // Trusts only client certificates of the foreign CA: ours is refused.
  await startServer('strict', '127.0.0.34', mtls(ca, `${SPIFFE}/good`, foreign));
  await startServer('plain', '127.0.0.35', grpc.ServerCredentials.createInsecure());
  cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    watchRoutes: false,
    log: () => {},
    upstreamTls: TLS,
  });
  process.env['GRPC_XDS_BOOTSTRAP_CONFIG'] = xdsBootstrapJson({
    server: cp.address,
    nodeId: 'default/a29-client',
    zone: 'zone-a',
    certificateProviders: {
      'lab-ca': { caCertificateFile: caFile, refreshIntervalMs: 1000 },
      'lab-identity': {
        certificateFile: clientId.cert,
        privateKeyFile: clientId.key,
        refreshIntervalMs: 1000,
      },
    },
  });
  const xds = (await import('@grpc/grpc-js-xds')) as unknown as {
    register(): void;
    XdsChannelCredentials: typeof XdsChannelCredentials;
    XdsServerCredentials: typeof XdsServerCredentials;
    XdsServer: typeof XdsServer;
  };
  xds.register();
  ({ XdsChannelCredentials, XdsServerCredentials, XdsServer } = xds);
});

after(async () => {
  for (const c of clients) c.close();
  await cp?.close();
  for (const s of servers) s.forceShutdown();
  await api?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('A29: the client presents its lab identity over mTLS and the server sees it', async () => {
  const reply = await settles('good', true);
  assert.equal(reply, `good peer=URI:${SPIFFE}/client`);
});

test('A29: a server whose SAN the Cluster does not list is refused', async () => {
  const err = await settles('othersan', false);
  assert.match(err, /^14: .*No matching subject alternative name/, err);
});

test('A29: a server certificate from another CA is refused', async () => {
  const err = await settles('foreign', false);
  assert.match(err, /^14: .*unable to verify the first certificate/, err);
});

test('A29: a server that trusts another CA refuses our client certificate', async () => {
  const err = await settles('strict', false);
  assert.match(err, /^14: /, err);
  assert.equal(served.get('strict') ?? 0, 0);
});

test('A29: with TLS in the Cluster the client never falls back to plaintext', async () => {
  const err = await settles('plain', false);
  assert.match(err, /^14: .*wrong version number/, err);
});

test('A29: without an identity instance the client sends no certificate and the mTLS server refuses it', async () => {
  await restartControlPlane({ caInstance: 'lab-ca', subjectAltNames: TLS.subjectAltNames ?? [] });
  const err = await settles('good', false);
  assert.match(err, /^14: .*certificate required/, err);
});

test('A29: without an UpstreamTlsContext the client uses its fallback (plaintext) credentials', async () => {
  await restartControlPlane(undefined);
  assert.equal(await settles('plain', true), 'plain peer=none');
  const before = served.get('good') ?? 0;
  const err = await settles('good', false);
  assert.match(err, /^14: /, err);
  assert.equal(served.get('good') ?? 0, before);
  // And back: the same channel set-up turns mTLS on again when the Cluster asks for it.
  await restartControlPlane(TLS);
  assert.equal(await settles('good', true), `good peer=URI:${SPIFFE}/client`);
});

test(
  'A36 + A29: an XdsServer takes its mTLS from our server Listener; the xDS client reaches it over mTLS from CDS',
  { timeout: 60_000 },
  async (t) => {
    await restartControlPlane(TLS, { identityInstance: 'server-identity', caInstance: 'lab-ca' });
    const serverId = files(
      'xds-server',
      ca.issue('server', { uris: [`${SPIFFE}/good`], ips: ['127.0.0.1'] }),
    );
    // XdsServer listens on the port of the address it is given, on every interface: find a free one.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const server = new XdsServer({
      'grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config': xdsBootstrapJson({
        server: cp.address,
        nodeId: 'default/a36-server',
        zone: 'zone-a',
        forXdsServer: true,
        certificateProviders: {
          'lab-ca': { caCertificateFile: caFile },
          'server-identity': { certificateFile: serverId.cert, privateKeyFile: serverId.key },
        },
      }),
    });
    t.after(() => server.forceShutdown());
    server.addService(echoService, whoHandler('xds-server'));
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(
        `127.0.0.1:${port}`,
        new XdsServerCredentials(grpc.ServerCredentials.createInsecure()),
        (err) => (err ? reject(err) : resolve()),
      ),
    );
    ports.set('xds-server', port);
    new SliceWriter(api, 'xds-server', port).put('xds-server-a', [{ ip: '127.0.0.1' }]);
    assert.equal(await settles('xds-server', true), `xds-server peer=URI:${SPIFFE}/client`);

    // Dialled directly: TLS without a client certificate, and plaintext, get no call.
    const before = served.get('xds-server');
    for (const creds of [
      grpc.credentials.createSsl(Buffer.from(ca.cert), null, null, { checkServerIdentity: () => undefined }),
      grpc.credentials.createInsecure(),
    ]) {
      const direct = new EchoClient(`127.0.0.1:${port}`, creds) as unknown as Echo;
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        direct.who({}, { deadline: Date.now() + 30_000 }, (e) => resolve(e)),
      );
      direct.close();
      assert.equal(err?.code, grpc.status.UNAVAILABLE);
    }
    assert.equal(served.get('xds-server'), before);
  },
);

test('A29 flags: xds serve and xds bootstrap turn their flags into the resources and bootstrap, or a typed error', () => {
  const s = xdsServeSettings(
    parseCommandLine(XDS_SERVE_FLAGS, [
      '--upstream-tls-ca-instance',
      'lab-ca',
      '--upstream-tls-identity-instance',
      'lab-identity',
      '--upstream-tls-san',
      `prefix=${SPIFFE}/`,
    ]).values,
  );
  assert.deepEqual(s.upstreamTls, {
    caInstance: 'lab-ca',
    identityInstance: 'lab-identity',
    subjectAltNames: [{ prefix: `${SPIFFE}/` }],
  });
  const bad = (args: string[]) => () => xdsServeSettings(parseCommandLine(XDS_SERVE_FLAGS, args).values);
  for (const args of [
    ['--upstream-tls-san', 'exact=x'],
    ['--upstream-tls-ca-instance', 'a', '--upstream-tls-san', 'regex=x'],
    ['--upstream-tls-ca-instance', 'a b'],
    ['--server-tls-ca-instance', 'lab-ca'],
    ['--server-tls-identity-instance', 'a/b'],
  ])
    assert.throws(bad(args), { code: 'GK_ERR_INVALID_OPTION' }, args.join(' '));
  for (const bad of [
    { caInstance: undefined as unknown as string },
    { caInstance: 'ca', identityInstance: '' },
  ])
    assert.throws(() => checkUpstreamTls(bad), { code: 'GK_ERR_INVALID_OPTION' });

  assert.deepEqual(
    xdsServeSettings(
      parseCommandLine(XDS_SERVE_FLAGS, [
        '--server-tls-identity-instance',
        'srv',
        '--server-tls-ca-instance',
        'lab-ca',
      ]).values,
    ).serverTls,
    { identityInstance: 'srv', caInstance: 'lab-ca' },
  );
  assert.equal(
    xdsBootstrap({ server: 'xds:1', nodeId: 'n', forXdsServer: true }).server_listener_resource_name_template,
    'grpc/server?xds.resource.listening_address=%s',
  );
  const providers = parseCertificateProviders(['lab-ca=ca=/ca.crt,refresh-ms=1500', 'me=cert=/c,key=/k']);
  const boot = xdsBootstrap({ server: 'xds:18000', nodeId: 'n', certificateProviders: providers });
  assert.deepEqual(boot.certificate_providers, {
    'lab-ca': {
      plugin_name: 'file_watcher',
      config: { ca_certificate_file: '/ca.crt', refresh_interval: '1.500s' },
    },
    me: {
      plugin_name: 'file_watcher',
      config: { certificate_file: '/c', private_key_file: '/k', refresh_interval: '10s' },
    },
  });
  for (const spec of ['x', 'x=ca', 'x=pem=/p', 'x=cert=/c'])
    assert.throws(
      () =>
        xdsBootstrap({
          server: 'xds:1',
          nodeId: 'n',
          certificateProviders: parseCertificateProviders([spec]),
        }),
      { code: 'GK_ERR_INVALID_OPTION' },
      spec,
    );
});
