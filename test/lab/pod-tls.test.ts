import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { checkHealth } from '../helpers/health.js';
import { startEmbeddedCluster } from '@grpc-kube/lab/internal/cluster/embedded.js';
import { NodeScriptRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import type { Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { GreeterClient } from '@grpc-kube/lab/internal/lab/hello.js';
import { POD_MAIN_SCRIPT, parsePodConfig, spawnPod } from '@grpc-kube/lab/internal/lab/pod-main.js';
import {
  LAB_TLS_DNS_ENV,
  TlsPodRuntime,
  createLabTls,
  serviceDnsNames,
} from '@grpc-kube/lab/internal/lab/tls.js';

// `grpc-kube lab --tls` pods: mutual TLS on the gRPC port with a certificate from the lab CA for the
// pod's IP and its Service's names, plaintext grpc.health.v1 on a probe port. Real processes, real
// handshakes on loopback.

/** SayHello's outcome: 0 and the pod's name, or the status code and details. */
function hello(
  target: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ChannelOptions = {},
): Promise<{ code: number; pod: string; details: string }> {
  const client = new GreeterClient(target, credentials, { 'grpc.enable_http_proxy': 0, ...options });
  return new Promise((resolve) => {
    client.sayHelloCb({ client: 'tls-test', counter: 1 }, 5000, (err, reply) => {
      client.close();
      resolve({ code: err ? err.code : 0, pod: reply?.pod ?? '', details: err?.details ?? '' });
    });
  });
}

/** An address of its own in 127.0.x (left to tests), so the fixed probe port cannot collide. */
function testAddress(): string {
  return `127.0.${randomInt(100, 250)}.${randomInt(2, 250)}`;
}

test('parsePodConfig takes the TLS files and the health port, and names what is missing', () => {
  const c = parsePodConfig({
    name: 'p',
    host: '127.0.2.1',
    tlsCertFile: '/c',
    tlsKeyFile: '/k',
    tlsCaFile: '/ca',
    healthPort: 50052,
  });
  assert.equal(c.tlsCaFile, '/ca');
  assert.equal(c.healthPort, 50052);
  assert.equal(parsePodConfig({ name: 'p', host: 'h' }).healthPort, 0);
  for (const [bad, field] of [
    [{ tlsCertFile: '/c' }, 'tlsCertFile'],
    [{ tlsCaFile: '/ca' }, 'tlsCaFile'],
    [{ tlsKeyFile: '' }, 'tlsKeyFile'],
    [{ healthPort: 70000 }, 'healthPort'],
  ] as const) {
    assert.throws(
      () => parsePodConfig({ name: 'p', host: 'h', ...bad }),
      (err: Error & { code?: string }) => err.code === 'GK_ERR_INVALID_OPTION' && err.message.includes(field),
      JSON.stringify(bad),
    );
  }
});

test(
  'a TLS pod serves mutual TLS to clients holding the lab CA and a client certificate, and health in plaintext on its probe port',
  { timeout: 60_000 },
  async (t) => {
    const tls = await createLabTls('lab');
    t.after(() => tls.remove());
    const host = testAddress();
    const cert = await tls.issue(`pod-${host}`, { ips: [host], dns: serviceDnsNames('hello', 'lab') });
    const pod = spawnPod({
      name: 'hello-tls-0',
      host,
      port: 0,
      healthPort: 50052,
      tlsCertFile: cert.certFile,
      tlsKeyFile: cert.keyFile,
      tlsCaFile: tls.caFile,
      shutdown: 'graceful',
      drainDelayMs: 60_000,
    });
    t.after(() => pod.kill('SIGKILL'));
    const { port } = await pod.listening;
    await pod.ready;
    const target = `ipv4:${host}:${port}`;
    const creds = tls.channelCredentials();

    // The pod's IP is in its certificate; so are its Service's names (what dns:, kubernetes: and
    // xds: authorities carry, and what a ClusterIP client names with ssl_target_name_override).
    assert.deepEqual(await hello(target, creds), { code: 0, pod: 'hello-tls-0', details: '' });
    for (const name of ['hello.lab', 'hello.lab.svc.cluster.local']) {
      const r = await hello(target, creds, { 'grpc.ssl_target_name_override': name });
      assert.equal(r.code, 0, `${name}: ${r.details}`);
    }
    // A name the certificate does not carry fails the check.
    const other = await hello(target, creds, { 'grpc.ssl_target_name_override': 'other.lab' });
    assert.equal(other.code, grpc.status.UNAVAILABLE, other.details);

    // Without the lab CA (system roots) the client cannot verify the pod.
    const noCa = await hello(target, grpc.credentials.createSsl());
    assert.equal(noCa.code, grpc.status.UNAVAILABLE, noCa.details);
    // The lab CA but no client certificate: the pod wants one (mutual TLS).
    const ca = Buffer.from(await (await import('node:fs/promises')).readFile(tls.caFile));
    const noCert = await hello(target, grpc.credentials.createSsl(ca));
    assert.equal(noCert.code, grpc.status.UNAVAILABLE, noCert.details);
    // Plaintext to the TLS port fails.
    const plain = await hello(target, grpc.credentials.createInsecure());
    assert.equal(plain.code, grpc.status.UNAVAILABLE, plain.details);

    // Health: plaintext on the probe port, and over mTLS on the gRPC port, the same state.
    assert.equal(await checkHealth(`${host}:50052`), 'SERVING');
    assert.equal(await checkHealth(target, '', creds), 'SERVING');
    // SIGTERM: the probe port tells the kubelet at once (the gRPC port still serves meanwhile).
    pod.kill('SIGTERM');
    await pod.terminating;
    assert.equal(await checkHealth(`${host}:50052`), 'NOT_SERVING');
    assert.equal((await hello(target, creds)).code, 0);
  },
);

test(
  'the embedded cluster runs TLS pods: each gets a certificate for its own IP, the kubelet probes the plaintext port',
  { timeout: 60_000 },
  async (t) => {
    const tls = await createLabTls('lab');
    t.after(() => tls.remove());
    const runtime = new TlsPodRuntime(new NodeScriptRuntime({ script: POD_MAIN_SCRIPT }), tls);
    const cluster = await startEmbeddedCluster({
      runtime,
      ipPool: { first: `127.0.${randomInt(100, 250)}.1` },
      probePeriodMs: 100,
      namespaces: ['lab'],
    });
    t.after(() => cluster.stop());
    await cluster.applyApp({
      name: 'hello',
      namespace: 'lab',
      replicas: 2,
      port: 50051,
      probe: { port: 50052, periodMs: 100, failureThreshold: 1 },
      env: { HELLO_HEALTH_PORT: '50052', [LAB_TLS_DNS_ENV]: serviceDnsNames('hello', 'lab').join(',') },
    });
    // Ready means the kubelet's plaintext probe reached each pod's probe port.
    const pods: Pod[] = await cluster.waitForReadyPods('lab', { app: 'hello' }, 2, 30_000);
    assert.equal(tls.issued, 2, 'one certificate per pod');
    const creds = tls.channelCredentials();
    for (const p of pods) {
      const ip = p.status?.podIP as string;
      // Each pod's certificate names its own IP: a client dialling the IP verifies it.
      const r = await hello(`ipv4:${ip}:50051`, creds);
      assert.equal(r.code, 0, `${ip}: ${r.details}`);
      assert.equal(r.pod, p.metadata.name);
    }
    const [a, b] = pods.map((p) => p.status?.podIP as string);
    // …and not the other pod's: pod a's address with pod b's certificate name fails.
    const cross = await hello(`ipv4:${a}:50051`, creds, { 'grpc.ssl_target_name_override': b as string });
    assert.equal(cross.code, grpc.status.UNAVAILABLE, cross.details);
  },
);
