// The ServiceAccount token projected into a real-cluster pod, as the kubelet's projected volume
// does: a token for the pod's serviceAccountName from the TokenRequest API, bound to the pod (it dies
// with the pod), written with the cluster CA and the namespace into a directory of the pod's own; the
// container gets KUBERNETES_SERVICE_HOST/PORT and GRPC_KUBE_SERVICEACCOUNT_DIR (grpc-kube's in-cluster
// config reads the mount from there). So a pod talks to kube-apiserver as its ServiceAccount, and the
// manifests' RBAC decides — a ServiceAccount without a binding gets 403s.
//
// Pods live in network namespaces whose only neighbour is the lab gateway, and kube-apiserver listens
// on 127.0.0.1: ApiRelay is a TCP relay on gateway:port → the API, byte for byte (TLS end to end; the
// serving certificate names the gateway, see RealControlPlaneOptions.extraServingIps); the projector
// starts it with the first pod and closes it with close(). Tokens are requested for an hour and not
// rotated: lab runs are shorter.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { Pod } from '../controllers/kinds.js';
import { KINDS, type Kube } from '../kube-api.js';
import type { PodEnvironment } from '../kubelet.js';

const TOKEN_SECONDS = 3600;

/** A TCP relay from `host:0` to the API server's address, closed with close(). */
export class ApiRelay {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(
    readonly host: string,
    private readonly upstream: { host: string; port: number },
  ) {}

  async start(): Promise<void> {
    const server = net.createServer((down) => {
      const up = net.connect(this.upstream);
      for (const s of [down, up]) {
        this.sockets.add(s);
        s.once('close', () => this.sockets.delete(s));
        s.on('error', () => {
          down.destroy();
          up.destroy();
        });
      }
      down.pipe(up).pipe(down);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new GrpcKubeError('GK_ERR_LAB', `API relay cannot listen on ${this.host}: ${err.message}`)),
      );
      server.listen(0, this.host, () => resolve());
    });
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

export interface ServiceAccountProjectorOptions {
  /** Where TokenRequests go (the kubelet's own Kube). */
  readonly kube: Kube;
  /** The cluster CA (ca.crt of every pod). */
  readonly caPem: string;
  /** The API server's URL, as this process reaches it. */
  readonly apiUrl: string;
  /** Where pods reach the API: the relay listens there (the lab gateway). */
  readonly host: string;
}

/** Writes each pod's ServiceAccount mount and says which variables point at it (the kubelet's PodEnvironment). */
export class ServiceAccountProjector implements PodEnvironment {
  private readonly dirs = new Map<string, string>();
  private readonly relay: ApiRelay;
  private relayStarted: Promise<void> | undefined;

  constructor(private readonly opts: ServiceAccountProjectorOptions) {
    const u = new URL(opts.apiUrl);
    this.relay = new ApiRelay(opts.host, {
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: Number(u.port || 443),
    });
  }

  /** The pod's environment from the node: the API's address, and the token mount unless opted out. */
  async project(pod: Pod): Promise<Record<string, string>> {
    this.relayStarted ??= this.relay.start().catch((err: unknown) => {
      this.relayStarted = undefined; // the next pod tries again
      throw err;
    });
    await this.relayStarted;
    const env: Record<string, string> = {
      KUBERNETES_SERVICE_HOST: this.opts.host,
      KUBERNETES_SERVICE_PORT: String(this.relay.port),
      KUBERNETES_SERVICE_PORT_HTTPS: String(this.relay.port),
    };
    if (pod.spec.automountServiceAccountToken === false) return env;
    const ns = pod.metadata.namespace ?? 'default';
    const name = pod.metadata.name ?? '';
    const sa = pod.spec.serviceAccountName ?? 'default';
    const answer = await this.opts.kube.post<{ status?: { token?: string } }>(
      KINDS.serviceaccounts,
      ns,
      sa,
      'token',
      {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: {
          expirationSeconds: TOKEN_SECONDS,
          boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name, uid: pod.metadata.uid },
        },
      },
    );
    const token = answer.status?.token;
    if (!token) {
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `pod ${ns}/${name}: the TokenRequest for ServiceAccount ${sa} gave no token`,
      );
    }
    const dir = await mkdtemp(join(tmpdir(), `gk-sa-${ns}-${name}-`.slice(0, 60)));
    this.dirs.set(pod.metadata.uid ?? `${ns}/${name}`, dir);
    await writeFile(join(dir, 'token'), token, { mode: 0o600 });
    await writeFile(join(dir, 'ca.crt'), this.opts.caPem);
    await writeFile(join(dir, 'namespace'), ns);
    return { ...env, GRPC_KUBE_SERVICEACCOUNT_DIR: dir };
  }

  /** Removes the pod's mount. */
  async release(pod: Pod): Promise<void> {
    const key = pod.metadata.uid ?? `${pod.metadata.namespace ?? 'default'}/${pod.metadata.name ?? ''}`;
    const dir = this.dirs.get(key);
    this.dirs.delete(key);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }

  /** Closes the relay and removes every mount left. */
  async close(): Promise<void> {
    await this.relayStarted?.catch(() => undefined);
    await this.relay.close();
    const dirs = [...this.dirs.values()];
    this.dirs.clear();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
}
