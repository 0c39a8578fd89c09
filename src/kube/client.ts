// A small Kubernetes API client for the two calls discovery needs: a paginated list and a streaming
// watch. Authentication and TLS come from @kubernetes/client-node's KubeConfig (in-cluster token files
// re-read as they rotate, kubeconfig certificates, exec and OIDC plugins), applied to every request so
// a rotated credential is picked up by the next list or watch. Answers become typed KubeApiErrors.

import * as http from 'node:http';
import * as https from 'node:https';
import { readFileSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { GrpcKubeError, KubeApiError, type ErrorCode } from '../errors.js';
import type { KubeList, KubeObject, KubeStatus, WatchEvent } from './types.js';

const IN_CLUSTER_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export interface ListOptions {
  labelSelector?: string;
  /** Page size; the client follows `continue` tokens until the list is whole. */
  limit?: number;
}

export interface WatchOptions {
  labelSelector?: string;
  resourceVersion: string;
  allowWatchBookmarks?: boolean;
  /** Server-side timeout; the stream ends cleanly after it and the caller re-watches. */
  timeoutSeconds?: number;
  /** No byte for this long (not even a bookmark) → the stream is treated as dead. */
  idleTimeoutMs?: number;
}

export interface WatchHandle {
  /** Resolves when the stream ends: cleanly (server timeout), by abort(), or rejects on an error. */
  readonly done: Promise<void>;
  abort(): void;
}

/** Resource identification used to build paths and error messages. */
export interface ResourcePath {
  group: string;
  version: string;
  resource: string;
  namespace?: string | undefined;
}

export class KubeClient {
  readonly kubeConfig: KubeConfig;
  readonly server: string;
  /** Namespace of the current context (or of the pod, in cluster); 'default' when none is set. */
  readonly defaultNamespace: string;
  private readonly agent: http.Agent;

  constructor(kubeConfig: KubeConfig) {
    const cluster = kubeConfig.getCurrentCluster();
    if (cluster === null || !cluster.server) {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        'the Kubernetes configuration has no current cluster: run in a pod with a ServiceAccount token, ' +
          'set KUBECONFIG, or pass a KubeConfig to setup()',
      );
    }
    this.kubeConfig = kubeConfig;
    this.server = cluster.server.replace(/\/+$/, '');
    const ctx = kubeConfig.getContextObject(kubeConfig.getCurrentContext());
    this.defaultNamespace = ctx?.namespace ?? readInClusterNamespace() ?? 'default';
    const isHttps = this.server.startsWith('https:');
    this.agent = isHttps
      ? new https.Agent({ keepAlive: true, maxSockets: 64 })
      : new http.Agent({ keepAlive: true, maxSockets: 64 });
  }

  /** In cluster when a ServiceAccount token is mounted, else KUBECONFIG / ~/.kube/config. */
  static fromDefault(): KubeClient {
    const kc = new KubeConfig();
    try {
      kc.loadFromDefault();
    } catch (err) {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        `could not load a Kubernetes configuration: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
    return new KubeClient(kc);
  }

  static fromKubeConfigString(yaml: string): KubeClient {
    const kc = new KubeConfig();
    kc.loadFromString(yaml);
    return new KubeClient(kc);
  }

  /** List every object (following continue tokens). */
  async list<T extends KubeObject>(rp: ResourcePath, opts: ListOptions = {}): Promise<KubeList<T>> {
    const items: T[] = [];
    let cont: string | undefined;
    let first: KubeList<T> | undefined;
    do {
      const q = new URLSearchParams();
      if (opts.labelSelector) q.set('labelSelector', opts.labelSelector);
      if (opts.limit !== undefined) q.set('limit', String(opts.limit));
      if (cont) q.set('continue', cont);
      const page = (await this.requestJson('GET', rp, 'list', q)) as KubeList<T>;
      if (page === null || typeof page !== 'object' || !Array.isArray(page.items)) {
        throw protocolError(rp, 'the list answer has no items array');
      }
      first ??= page;
      items.push(...page.items);
      cont = page.metadata?.continue || undefined;
    } while (cont);
    return {
      ...(first as KubeList<T>),
      metadata: { resourceVersion: first.metadata?.resourceVersion },
      items,
    };
  }

  /**
   * Open a watch stream. Events are delivered in order as they arrive; an ERROR event ends the stream
   * and rejects `done` with a KubeApiError carrying the Status's code (410 → reason 'Expired').
   */
  watch<T extends KubeObject>(
    rp: ResourcePath,
    opts: WatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
  ): WatchHandle {
    const q = new URLSearchParams({ watch: '1', resourceVersion: opts.resourceVersion });
    if (opts.labelSelector) q.set('labelSelector', opts.labelSelector);
    if (opts.allowWatchBookmarks !== false) q.set('allowWatchBookmarks', 'true');
    if (opts.timeoutSeconds !== undefined) q.set('timeoutSeconds', String(opts.timeoutSeconds));
    let req: http.ClientRequest | undefined;
    let aborted = false;
    const done = new Promise<void>((resolve, reject) => {
      this.open('GET', rp, q)
        .then((r) => {
          req = r;
          if (aborted) {
            r.destroy();
            resolve();
            return;
          }
          r.on('response', (res) => {
            if ((res.statusCode ?? 0) >= 300) {
              readBody(res)
                .then((body) => reject(errorFromResponse(rp, 'watch', res.statusCode ?? 0, body)))
                .catch(reject);
              return;
            }
            let buf = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              buf += chunk;
              let nl: number;
              while ((nl = buf.indexOf('\n')) >= 0) {
                const line = buf.slice(0, nl);
                buf = buf.slice(nl + 1);
                if (line.trim() === '') continue;
                let ev: WatchEvent<T>;
                try {
                  ev = JSON.parse(line) as WatchEvent<T>;
                } catch {
                  r.destroy();
                  reject(protocolError(rp, `a watch line is not JSON: ${line.slice(0, 120)}`));
                  return;
                }
                if (ev.type === 'ERROR') {
                  const st = ev.object as KubeStatus;
                  r.destroy();
                  reject(errorFromStatus(rp, 'watch', st.code ?? 500, st));
                  return;
                }
                try {
                  onEvent(ev);
                } catch (err) {
                  r.destroy();
                  reject(err);
                  return;
                }
              }
            });
            res.on('end', () => resolve());
            res.on('error', (err) => (aborted ? resolve() : reject(unreachable(rp, err))));
            res.on('aborted', () =>
              aborted ? resolve() : reject(unreachable(rp, new Error('stream aborted'))),
            );
          });
          r.on('error', (err) => (aborted ? resolve() : reject(unreachable(rp, err))));
          if (opts.idleTimeoutMs !== undefined) {
            r.setTimeout(opts.idleTimeoutMs, () => {
              r.destroy(new Error(`no data on the watch for ${opts.idleTimeoutMs} ms`));
            });
          }
          r.end();
        })
        .catch(reject);
    });
    return {
      done,
      abort: () => {
        aborted = true;
        req?.destroy();
      },
    };
  }

  /** Close idle keep-alive sockets. */
  close(): void {
    this.agent.destroy();
  }

  private async requestJson(
    method: string,
    rp: ResourcePath,
    verb: string,
    q: URLSearchParams,
  ): Promise<unknown> {
    const req = await this.open(method, rp, q);
    return new Promise((resolve, reject) => {
      req.on('response', (res) => {
        readBody(res)
          .then((body) => {
            const status = res.statusCode ?? 0;
            if (status >= 300) {
              reject(errorFromResponse(rp, verb, status, body));
              return;
            }
            try {
              resolve(JSON.parse(body));
            } catch {
              reject(protocolError(rp, `the ${verb} answer is not JSON`));
            }
          })
          .catch((err: unknown) => reject(unreachable(rp, err)));
      });
      req.on('error', (err) => reject(unreachable(rp, err)));
      req.end();
    });
  }

  private async open(method: string, rp: ResourcePath, q: URLSearchParams): Promise<http.ClientRequest> {
    const url = new URL(this.server + resourceUrlPath(rp) + '?' + q.toString());
    const opts: https.RequestOptions = { method, headers: { Accept: 'application/json' } };
    try {
      // Applied per request: token files and exec credentials may have rotated since the last one.
      await this.kubeConfig.applyToHTTPSOptions(opts);
    } catch (err) {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        `could not apply Kubernetes credentials: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
    const reqOpts: https.RequestOptions = {
      method,
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port,
      path: url.pathname + url.search,
      headers: opts.headers,
      agent: this.agent,
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      auth: opts.auth,
      servername: opts.servername,
    };
    if (opts.rejectUnauthorized !== undefined) reqOpts.rejectUnauthorized = opts.rejectUnauthorized;
    return url.protocol === 'https:' ? https.request(reqOpts) : http.request(reqOpts);
  }
}

export function resourceUrlPath(rp: ResourcePath): string {
  const base = rp.group === '' ? `/api/${rp.version}` : `/apis/${rp.group}/${rp.version}`;
  const ns = rp.namespace !== undefined ? `/namespaces/${encodeURIComponent(rp.namespace)}` : '';
  return `${base}${ns}/${rp.resource}`;
}

function readInClusterNamespace(): string | undefined {
  try {
    return readFileSync(IN_CLUSTER_NAMESPACE_FILE, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => (body += c));
    res.on('end', () => resolve(body));
    res.on('error', reject);
  });
}

function describe(rp: ResourcePath): string {
  const gr = rp.group === '' ? rp.resource : `${rp.resource}.${rp.group}`;
  return rp.namespace !== undefined ? `${gr} in namespace "${rp.namespace}"` : gr;
}

function errorFromResponse(rp: ResourcePath, verb: string, status: number, body: string): KubeApiError {
  let st: Partial<KubeStatus> = {};
  try {
    st = JSON.parse(body) as KubeStatus;
  } catch {
    st = { message: body.slice(0, 200) };
  }
  return errorFromStatus(rp, verb, status, st);
}

/** Map an API answer to the error a user can act on. */
export function errorFromStatus(
  rp: ResourcePath,
  verb: string,
  status: number,
  st: Partial<KubeStatus>,
): KubeApiError {
  const server = st.message ? ` (API server: ${st.message})` : '';
  const gr = rp.group === '' ? rp.resource : `${rp.resource}.${rp.group}`;
  const where = rp.namespace !== undefined ? ` in namespace "${rp.namespace}"` : '';
  let code: ErrorCode;
  let message: string;
  switch (status) {
    case 401:
      code = 'GK_ERR_KUBE_UNAUTHORIZED';
      message = `the Kubernetes API rejected the credentials for ${verb} ${describe(rp)}${server}; check the token or kubeconfig user`;
      break;
    case 403:
      code = 'GK_ERR_KUBE_FORBIDDEN';
      message =
        `RBAC forbids "${verb}" on ${gr}${where}${server}; grant the client's ServiceAccount a Role with ` +
        `verbs get, list, watch on resource "${rp.resource}" in apiGroup "${rp.group}"${where} and a RoleBinding to it`;
      break;
    case 404:
      code = 'GK_ERR_KUBE_NOT_FOUND';
      message = `the Kubernetes API has no ${describe(rp)}${server}; ${rp.group === 'discovery.k8s.io' ? 'EndpointSlices (discovery.k8s.io/v1) need Kubernetes >= 1.21' : 'check the resource name'}`;
      break;
    case 410:
      code = 'GK_ERR_KUBE_EXPIRED';
      message = `the watch resourceVersion of ${describe(rp)} expired${server}; the list must be re-read`;
      break;
    default:
      code =
        status >= 500 || status === 429 || status === 0 ? 'GK_ERR_KUBE_UNREACHABLE' : 'GK_ERR_KUBE_PROTOCOL';
      message = `the Kubernetes API answered ${status} to ${verb} ${describe(rp)}${server}`;
  }
  return new KubeApiError(code, message, status, st.reason);
}

function unreachable(rp: ResourcePath, err: unknown): KubeApiError {
  const why = err instanceof Error ? err.message : String(err);
  return new KubeApiError(
    'GK_ERR_KUBE_UNREACHABLE',
    `the Kubernetes API could not be reached for ${describe(rp)}: ${why}`,
    0,
    undefined,
    { cause: err },
  );
}

function protocolError(rp: ResourcePath, why: string): KubeApiError {
  return new KubeApiError(
    'GK_ERR_KUBE_PROTOCOL',
    `bad answer from the Kubernetes API for ${describe(rp)}: ${why}`,
    0,
    undefined,
  );
}

/** True for the answer that means "your resourceVersion is too old: list again". */
export function isExpired(err: unknown): boolean {
  return (
    err instanceof KubeApiError && (err.status === 410 || err.reason === 'Expired' || err.reason === 'Gone')
  );
}
