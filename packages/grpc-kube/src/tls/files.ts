// TLS identity from files (certificate, key, optional CA), re-read when they change: the contract
// cert-manager and SPIFFE helpers expect (they rewrite the files; the server picks them up, no
// restart). A new set is used only once it forms a usable identity — the key matches the
// certificate, the CA parses — so a rotation caught between writing the certificate and the key
// keeps the last good set and loses no handshake; a bad set is reported (TlsError), once per reason.
//
// One object serves both kinds of server: grpc-js reads it as a CertificateProvider (identity and
// CA listeners, grpc-js's file-watcher contract), node:tls / node:http2 servers take
// secureContextOptions() and onChange().

import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { GrpcKubeError, InvalidOptionError } from '../errors.js';

export interface TlsFilesOptions {
  /** PEM certificate chain, leaf first. */
  readonly certFile: string;
  /** PEM private key of the leaf. */
  readonly keyFile: string;
  /** PEM CA bundle that peers' certificates must chain to: set it for mutual TLS. */
  readonly caFile?: string;
  /** With caFile: refuse peers without a valid certificate. Default true. */
  readonly requireClientCert?: boolean;
  /** How often the files are checked for changes. Default 1000 ms. */
  readonly refreshMs?: number;
}

export class TlsError extends GrpcKubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('GK_ERR_TLS', message, options);
    this.name = 'TlsError';
  }
}

interface Material {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer | undefined;
}

type IdentityListener = (u: { certificate: Buffer; privateKey: Buffer } | null) => void;
type CaListener = (u: { caCertificate: Buffer } | null) => void;

async function readMaterial(o: TlsFilesOptions): Promise<Material> {
  const read = async (file: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new TlsError(`cannot read the ${what} file ${file}: ${(err as Error).message}`, { cause: err });
    }
  };
  const [cert, key, ca] = await Promise.all([
    read(o.certFile, 'certificate'),
    read(o.keyFile, 'key'),
    o.caFile === undefined ? undefined : read(o.caFile, 'CA'),
  ]);
  try {
    // Throws when the key does not match the certificate or a PEM block does not parse.
    createSecureContext({ cert, key, ...(ca !== undefined ? { ca } : {}) });
  } catch (err) {
    throw new TlsError(
      `${o.certFile} / ${o.keyFile}${o.caFile !== undefined ? ` / ${o.caFile}` : ''} do not form a TLS identity: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return { cert, key, ca };
}

function same(a: Material, b: Material): boolean {
  return (
    a.cert.equals(b.cert) && a.key.equals(b.key) && (a.ca ?? Buffer.alloc(0)).equals(b.ca ?? Buffer.alloc(0))
  );
}

export class TlsFiles {
  readonly options: Readonly<TlsFilesOptions>;
  /** Sets taken into use since start (1 = the initial one). */
  generation = 1;
  private material: Material;
  private readonly timer: NodeJS.Timeout;
  private readonly changeListeners = new Set<(o: SecureContextOptions) => void>();
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly caListeners = new Set<CaListener>();
  private lastError = '';
  private checking = false;
  private closed = false;

  private constructor(
    options: TlsFilesOptions,
    material: Material,
    private readonly onError: (err: TlsError) => void,
  ) {
    this.options = options;
    this.material = material;
    this.timer = setInterval(() => void this.check(), options.refreshMs ?? 1000);
    this.timer.unref();
  }

  /** Read and check the files; throws TlsError when they are not a usable identity. */
  static async load(
    options: TlsFilesOptions,
    onError: (err: TlsError) => void = () => {},
  ): Promise<TlsFiles> {
    for (const f of ['certFile', 'keyFile'] as const) {
      if (typeof options[f] !== 'string' || options[f] === '')
        throw new InvalidOptionError(`tls.${f}`, 'must be a file path');
    }
    const refresh = options.refreshMs ?? 1000;
    if (!Number.isInteger(refresh) || refresh < 10)
      throw new InvalidOptionError(
        'tls.refreshMs',
        `must be an integer >= 10, got ${String(options.refreshMs)}`,
      );
    const material = await readMaterial(options);
    return new TlsFiles(Object.freeze({ ...options }), material, onError);
  }

  /** Mutual TLS: peers must present a certificate signed by the CA. */
  get mutual(): boolean {
    return this.material.ca !== undefined && this.options.requireClientCert !== false;
  }

  /** For node:tls / node:http2: the current identity (and CA, which also asks peers for a certificate). */
  secureContextOptions(): SecureContextOptions {
    const m = this.material;
    return { cert: m.cert, key: m.key, ...(m.ca !== undefined ? { ca: m.ca } : {}) };
  }

  /** Called with the new options each time a changed, valid set is taken into use. */
  onChange(listener: (o: SecureContextOptions) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Re-read the files now (the timer does it every refreshMs); resolves once done. */
  async check(): Promise<void> {
    if (this.checking || this.closed) return;
    this.checking = true;
    try {
      const next = await readMaterial(this.options);
      this.lastError = '';
      if (this.closed || same(next, this.material)) return;
      this.material = next;
      this.generation++;
      const opts = this.secureContextOptions();
      for (const l of this.changeListeners) l(opts);
      this.notifyGrpc();
    } catch (err) {
      const e = err instanceof TlsError ? err : new TlsError(String(err));
      // A rotation in progress fails the check a few times in a row: report each reason once.
      if (e.message !== this.lastError) {
        this.lastError = e.message;
        this.onError(e);
      }
    } finally {
      this.checking = false;
    }
  }

  /** grpc-js server credentials that follow the files (mutual TLS when there is a CA file). */
  serverCredentials(): grpc.ServerCredentials {
    // grpc-js 1.14 names this function's parameters (ca, identity) but hands the first to its class
    // as the identity provider and the second as the CA provider (its .d.ts also marks only the
    // first non-null): identity first.
    return grpc.experimental.createCertificateProviderServerCredentials(
      this,
      this.material.ca !== undefined ? this : null,
      this.mutual,
    );
  }

  /** grpc-js client credentials with this identity (for mTLS) and CA (to verify the server). */
  channelCredentials(): grpc.ChannelCredentials {
    const m = this.material;
    return grpc.credentials.createSsl(m.ca ?? null, m.key, m.cert);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.changeListeners.clear();
    this.identityListeners.clear();
    this.caListeners.clear();
  }

  // grpc-js CertificateProvider. Listeners hear the current set on the next tick: grpc-js adds
  // them before the watcher that applies the update, which would miss a synchronous call.
  addIdentityCertificateListener(l: IdentityListener): void {
    this.identityListeners.add(l);
    setImmediate(() => {
      if (this.identityListeners.has(l))
        l({ certificate: this.material.cert, privateKey: this.material.key });
    });
  }
  removeIdentityCertificateListener(l: IdentityListener): void {
    this.identityListeners.delete(l);
  }
  addCaCertificateListener(l: CaListener): void {
    this.caListeners.add(l);
    setImmediate(() => {
      const ca = this.material.ca;
      if (this.caListeners.has(l)) l(ca === undefined ? null : { caCertificate: ca });
    });
  }
  removeCaCertificateListener(l: CaListener): void {
    this.caListeners.delete(l);
  }

  private notifyGrpc(): void {
    const m = this.material;
    for (const l of this.identityListeners) l({ certificate: m.cert, privateKey: m.key });
    for (const l of this.caListeners) l(m.ca === undefined ? null : { caCertificate: m.ca });
  }
}
