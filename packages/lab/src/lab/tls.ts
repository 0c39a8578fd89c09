// The lab's TLS (`grpc-kube lab --tls`): a CA made for one run, and the certificates it signs —
//  - pods: the pod's IP and its Service's DNS names as SANs, issued by the pod runtime when the pod
//    starts, as cert-manager's CSI driver does from a pod's IP and volume attributes (the CA key
//    stays in the lab's process; a pod gets its own certificate and key, and the CA to verify peers);
//  - the lab's proxies: their listening address;
//  - clients: a SPIFFE URI SAN (`spiffe://cluster.local/ns/<ns>/sa/lab-client`), for mutual TLS.
// P-256 keys and certificates made in this process (src/lab/x509.ts), written to a private temp dir.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import type { PodProcess, PodRuntime, PodStartSpec } from '../cluster/pod-runtime.js';
import { createCertificateAuthority, type Issued } from './x509.js';

export interface CertFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** Container env naming the DNS SANs of a pod's certificate (comma-separated), read by the runtime. */
export const LAB_TLS_DNS_ENV = 'GRPC_KUBE_LAB_TLS_DNS';
/** What a pod's Hello server reads: its certificate, key, and the CA its clients must chain to. */
export const POD_TLS_ENV = Object.freeze({
  cert: 'HELLO_TLS_CERT',
  key: 'HELLO_TLS_KEY',
  ca: 'HELLO_TLS_CA',
});

/** The lab certificates live one run: a day is plenty. */
const DAYS = 1;

export interface LabTls {
  readonly dir: string;
  readonly caFile: string;
  /** The lab clients' identity (mutual TLS): signed for clientAuth with the namespace's SPIFFE ID. */
  readonly client: CertFiles;
  /** A serving certificate (also good for clientAuth) for these IP addresses and DNS names. */
  issue(name: string, sans: { ips?: readonly string[]; dns?: readonly string[] }): Promise<CertFiles>;
  /** grpc-js channel credentials: verify servers against the lab CA, present the client certificate. */
  channelCredentials(): grpc.ChannelCredentials;
  /** Certificates signed so far (the CA and the client's excluded). */
  readonly issued: number;
  remove(): Promise<void>;
}

export { serviceDnsNames } from 'grpc-kube/internal/tls/names.js';

export async function createLabTls(namespace: string): Promise<LabTls> {
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-lab-tls-'));
  const write = async (name: string, m: Issued): Promise<CertFiles> => {
    const f = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
    await writeFile(f.certFile, m.cert);
    await writeFile(f.keyFile, m.key, { mode: 0o600 });
    return f;
  };
  try {
    const ca = createCertificateAuthority('grpc-kube-lab-tls-ca', DAYS);
    await writeFile(join(dir, 'ca.crt'), ca.cert);
    const clientId = ca.issue('lab-client', {
      uris: [`spiffe://cluster.local/ns/${namespace}/sa/lab-client`],
    });
    const client = await write('client', clientId);
    const credentials = grpc.credentials.createSsl(
      Buffer.from(ca.cert),
      Buffer.from(clientId.key),
      Buffer.from(clientId.cert),
    );
    // One issuance per name and SANs: two pods starting on one IP share it.
    const pending = new Map<string, Promise<CertFiles>>();
    let serial = 0;
    return {
      dir,
      caFile: join(dir, 'ca.crt'),
      client,
      get issued() {
        return serial;
      },
      issue(name, sans) {
        if (!/^[a-z0-9][a-z0-9.-]*$/.test(name))
          return Promise.reject(
            new InvalidOptionError('name', `must be a DNS label-like file name, got "${name}"`),
          );
        const key = JSON.stringify([name, sans.ips ?? [], sans.dns ?? []]);
        let p = pending.get(key);
        if (p === undefined) {
          const file = `${name}-${++serial}`;
          p = Promise.resolve().then(() => write(file, ca.issue(name, sans)));
          pending.set(key, p);
        }
        return p;
      },
      channelCredentials: () => credentials,
      remove: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A pod runtime that gives each pod a certificate for its IP and the DNS names its container env
 * lists (LAB_TLS_DNS_ENV) before starting it, in POD_TLS_ENV variables.
 */
export class TlsPodRuntime implements PodRuntime {
  constructor(
    private readonly inner: PodRuntime,
    private readonly tls: LabTls,
  ) {}

  async start(spec: PodStartSpec): Promise<PodProcess> {
    const dns = (spec.env[LAB_TLS_DNS_ENV] ?? '').split(',').filter((d) => d !== '');
    const cert = await this.tls.issue(`pod-${spec.ip}`, { ips: [spec.ip], dns });
    return this.inner.start({
      ...spec,
      env: {
        ...spec.env,
        [POD_TLS_ENV.cert]: cert.certFile,
        [POD_TLS_ENV.key]: cert.keyFile,
        [POD_TLS_ENV.ca]: this.tls.caFile,
      },
    });
  }
}

export interface TlsRelay {
  /** host:port the relay listens on (plaintext, loopback). */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * A loopback listener whose connections are carried to `upstream` over mutual TLS (ALPN h2), for a
 * client that cannot speak TLS itself: grpc-js-xds 1.14 accepts only `insecure` and `google_default`
 * bootstrap channel_creds, so the lab's xDS clients reach the TLS control plane through this relay,
 * as Envoy reaches istiod through its pilot-agent. The bytes are HTTP/2 either way (h2c prior
 * knowledge inside, h2 in TLS outside); the relay reads none of them.
 */
export async function startTlsRelay(o: {
  listen: string;
  upstream: { host: string; port: number; servername: string };
  tls: LabTls;
}): Promise<TlsRelay> {
  const [ca, cert, key] = await Promise.all(
    [o.tls.caFile, o.tls.client.certFile, o.tls.client.keyFile].map((f) => readFile(f)),
  );
  const secureContext = createSecureContext({ ca, cert, key });
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (inner) => {
    const outer = tlsConnect({
      host: o.upstream.host,
      port: o.upstream.port,
      servername: o.upstream.servername,
      secureContext,
      ALPNProtocols: ['h2'],
    });
    for (const s of [inner, outer]) {
      sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => {
        sockets.delete(s);
        // Either side gone: the other goes too (the client reconnects, as to a restarted server).
        inner.destroy();
        outer.destroy();
      });
    }
    inner.pipe(outer);
    outer.pipe(inner);
  });
  const m = /^(.*):(\d+)$/.exec(o.listen);
  if (m === null) throw new InvalidOptionError('listen', `must be host:port, got "${o.listen}"`);
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error): void =>
      reject(new GrpcKubeError('GK_ERR_LAB', `the TLS relay cannot listen on ${o.listen}: ${err.message}`));
    server.once('error', fail);
    server.listen(Number(m[2]), m[1], () => {
      server.off('error', fail);
      resolve();
    });
  });
  const bound = server.address() as net.AddressInfo;
  return {
    address: `${bound.address}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
