// The lab's kube-proxy: a ClusterIP Service as an L4 forwarder on a virtual IP:port. Like kube-proxy's
// iptables rules it balances connections, not requests: each accepted connection is pinned to one
// backend picked at random among the Ready ones (or, if none is Ready, among the serving-terminating
// ones, as kube-proxy does since 1.26), and stays there. A backend leaving the list does not touch
// connections already pinned to it (conntrack keeps them); only the backend closing them does.

import net from 'node:net';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface ClusterIpBackend {
  host: string;
  port: number;
  /** EndpointSlice `ready`. Default true. */
  ready?: boolean;
  /** EndpointSlice `serving` (true for a terminating pod still passing readiness). Default = ready. */
  serving?: boolean;
}

export interface ClusterIpOptions {
  /** The virtual IP, a loopback address, e.g. 127.0.1.1. */
  host: string;
  /** 0 picks a free port. */
  port: number;
  backends?: readonly ClusterIpBackend[];
  /** Uniform [0, 1) source; the lab passes a seeded one. Default Math.random. */
  random?: () => number;
  /** How long a side may stay half-closed after its peer closed cleanly. Default 1000. */
  lingerMs?: number;
}

interface Pair {
  downstream: net.Socket;
  upstream: net.Socket;
}

function backendKey(b: { host: string; port: number }): string {
  return `${b.host}:${b.port}`;
}

export class ClusterIpForwarder {
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly random: () => number;
  private readonly lingerMs: number;
  private readonly server: net.Server;
  private backends: readonly Readonly<ClusterIpBackend>[] = [];
  private readonly pairs = new Set<Pair>();
  private closed = false;
  private boundPort = 0;
  /** Connections accepted per backend `host:port` (the picture of connection-level balancing). */
  readonly picks = new Map<string, number>();
  /** Connections refused because no backend was Ready or serving. */
  rejected = 0;

  constructor(options: ClusterIpOptions) {
    if (!net.isIPv4(options.host)) throw new InvalidOptionError('host', 'must be an IPv4 address');
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new InvalidOptionError('port', 'must be an integer in 0..65535');
    }
    this.host = options.host;
    this.requestedPort = options.port;
    this.random = options.random ?? Math.random;
    this.lingerMs = options.lingerMs ?? 1000;
    if (!Number.isInteger(this.lingerMs) || this.lingerMs < 0)
      throw new InvalidOptionError('lingerMs', 'must be an integer >= 0');
    if (options.backends) this.setBackends(options.backends);
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', () => {});
  }

  listen(): Promise<{ host: string; port: number }> {
    if (this.closed)
      return Promise.reject(new GrpcKubeError('GK_ERR_DESTROYED', 'ClusterIpForwarder is closed'));
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void =>
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `ClusterIP cannot listen on ${this.host}:${this.requestedPort}: ${err.message}`,
            {
              cause: err,
            },
          ),
        );
      this.server.once('error', onError);
      this.server.listen(this.requestedPort, this.host, () => {
        this.server.off('error', onError);
        this.boundPort = (this.server.address() as net.AddressInfo).port;
        resolve({ host: this.host, port: this.boundPort });
      });
    });
  }

  get port(): number {
    return this.boundPort;
  }

  /** `host:port` of the virtual IP, e.g. for an `ipv4:` target. */
  get address(): string {
    return `${this.host}:${this.boundPort}`;
  }

  /** Replace the endpoint list (from the Service's EndpointSlices); affects new connections only. */
  setBackends(backends: readonly ClusterIpBackend[]): void {
    const copy = backends.map((b, i) => {
      if (!net.isIPv4(b.host)) throw new InvalidOptionError(`backends[${i}].host`, 'must be an IPv4 address');
      if (!Number.isInteger(b.port) || b.port < 1 || b.port > 65535) {
        throw new InvalidOptionError(`backends[${i}].port`, 'must be an integer in 1..65535');
      }
      const ready = b.ready ?? true;
      return Object.freeze({ host: b.host, port: b.port, ready, serving: b.serving ?? ready });
    });
    this.backends = Object.freeze(copy);
  }

  /** Open forwarded connections. */
  connections(): number {
    return this.pairs.size;
  }

  private pick(): Readonly<ClusterIpBackend> | undefined {
    let pool = this.backends.filter((b) => b.ready);
    if (pool.length === 0) pool = this.backends.filter((b) => b.serving);
    if (pool.length === 0) return undefined;
    const i = Math.min(pool.length - 1, Math.floor(this.random() * pool.length));
    return pool[i];
  }

  private accept(downstream: net.Socket): void {
    downstream.on('error', () => {});
    const backend = this.closed ? undefined : this.pick();
    if (!backend) {
      // kube-proxy REJECTs traffic to a Service without endpoints: the client sees a reset.
      this.rejected++;
      downstream.resetAndDestroy();
      return;
    }
    const key = backendKey(backend);
    this.picks.set(key, (this.picks.get(key) ?? 0) + 1);
    const upstream = net.connect({ host: backend.host, port: backend.port, noDelay: true });
    upstream.on('error', () => {});
    const pair: Pair = { downstream, upstream };
    this.pairs.add(pair);
    // pipe() gives backpressure both ways and forwards half-closes (FIN). When one side is gone the
    // other is ended after its buffered bytes (a GOAWAY must still arrive), or reset if the side died
    // with an error, as the pod's RST would reach the client through kube-proxy's DNAT.
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    const onClose = (other: net.Socket) => (hadError: boolean) => {
      if (other.destroyed) {
        // both sides gone
      } else if (hadError) {
        other.resetAndDestroy();
      } else {
        other.end();
        // A peer that never answers our FIN would hold the pair forever.
        const linger = setTimeout(() => other.destroy(), this.lingerMs);
        linger.unref();
        other.once('close', () => clearTimeout(linger));
      }
      if (upstream.destroyed && downstream.destroyed) this.pairs.delete(pair);
    };
    downstream.once('close', onClose(upstream));
    upstream.once('close', onClose(downstream));
  }

  /** Stop listening and cut every forwarded connection. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    for (const pair of [...this.pairs]) {
      pair.upstream.destroy();
      pair.downstream.destroy();
    }
    this.pairs.clear();
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
  }
}
