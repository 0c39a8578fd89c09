// The lab's TLS (`grpc-kube lab --tls`): a CA made for one run, and the certificates it signs —
//  - pods: the pod's IP and its Service's DNS names as SANs, issued by the pod runtime when the pod
//    starts, as cert-manager's CSI driver does from a pod's IP and volume attributes (the CA key
//    stays in the lab's process; a pod gets its own certificate and key, and the CA to verify peers);
//  - the lab's proxies: their listening address;
//  - clients: a SPIFFE URI SAN (`spiffe://cluster.local/ns/<ns>/sa/lab-client`), for mutual TLS.
// P-256 keys, made with openssl through the lab PKI helpers (src/cluster/real/pki.ts): node:crypto
// makes keys but not X.509 certificates.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createCa, signed } from '../cluster/real/pki.js';
import { InvalidOptionError } from '../errors.js';
import type { PodProcess, PodRuntime, PodStartSpec } from '../cluster/pod-runtime.js';

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
const LEAF = 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n';

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

/** The DNS names a Service's pods answer for: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`. */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
  ];
}

export async function createLabTls(namespace: string): Promise<LabTls> {
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-lab-tls-'));
  try {
    await createCa(dir, 'grpc-kube-lab-tls-ca', DAYS);
    const spiffe = `spiffe://cluster.local/ns/${namespace}/sa/lab-client`;
    await signed(
      dir,
      'client',
      '/CN=lab-client',
      `${LEAF}extendedKeyUsage=clientAuth\nsubjectAltName=URI:${spiffe}\n`,
      DAYS,
    );
    const [ca, clientCert, clientKey] = await Promise.all(
      ['ca.crt', 'client.crt', 'client.key'].map((f) => readFile(join(dir, f))),
    );
    const files = (name: string): CertFiles => ({
      certFile: join(dir, `${name}.crt`),
      keyFile: join(dir, `${name}.key`),
    });
    // One issuance per name: two pods starting on one IP at once share it.
    const pending = new Map<string, Promise<CertFiles>>();
    let serial = 0;
    let issued = 0;
    const credentials = grpc.credentials.createSsl(ca as Buffer, clientKey as Buffer, clientCert as Buffer);
    return {
      dir,
      caFile: join(dir, 'ca.crt'),
      client: files('client'),
      get issued() {
        return issued;
      },
      issue(name, sans) {
        if (!/^[a-z0-9][a-z0-9.-]*$/.test(name))
          return Promise.reject(
            new InvalidOptionError('name', `must be a DNS label-like file name, got "${name}"`),
          );
        const alt = [...(sans.ips ?? []).map((ip) => `IP:${ip}`), ...(sans.dns ?? []).map((d) => `DNS:${d}`)];
        const key = `${name}|${alt.join(',')}`;
        let p = pending.get(key);
        if (p === undefined) {
          const file = `${name}-${++serial}`;
          p = signed(
            dir,
            file,
            `/CN=${name}`,
            `${LEAF}extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${alt.join(',')}\n`,
            DAYS,
          ).then(() => {
            issued++;
            return files(file);
          });
          pending.set(key, p);
          p.catch(() => pending.delete(key));
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
