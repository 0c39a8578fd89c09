// A kubeconfig read without @kubernetes/client-node, which costs ~0.5 s to import: clusters, users and
// contexts; certificate-authority(-data), client-certificate/key(-data), token and tokenFile,
// username/password, `as` (impersonation), insecure-skip-tls-verify, tls-server-name, proxy-url and
// the context's namespace. In a pod the configuration is two files (the ServiceAccount token and CA).
// Only users whose credentials come from a plugin (`exec`, `auth-provider`) load client-node, on their
// first request, and hand it the same cluster and user. js-yaml too is loaded on first use, and not at
// all for JSON kubeconfigs.
//
// `KubeConfigLike` is what KubeClient needs; client-node's KubeConfig satisfies it too, so a caller
// that already holds one can pass it.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { isAbsolute, join } from 'node:path';
import { isIPv6 } from 'node:net';
import { GrpcKubeError, missingPackage } from '../errors.js';

export interface KubeCluster {
  readonly name: string;
  readonly server: string;
  readonly caFile?: string | undefined;
  readonly caData?: string | undefined;
  readonly skipTLSVerify: boolean;
  readonly tlsServerName?: string | undefined;
  readonly proxyUrl?: string | undefined;
}

export interface KubeUser {
  readonly name: string;
  readonly token?: string | undefined;
  /** Read again on every request: projected ServiceAccount tokens rotate. */
  readonly tokenFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly certData?: string | undefined;
  readonly keyFile?: string | undefined;
  readonly keyData?: string | undefined;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly impersonateUser?: string | undefined;
  /** Plugin credentials: handled by @kubernetes/client-node, loaded when first needed. */
  readonly authProvider?: object | undefined;
  readonly exec?: object | undefined;
}

export interface KubeContext {
  readonly name: string;
  readonly cluster: string;
  readonly user?: string | undefined;
  readonly namespace?: string | undefined;
}

/** Headers and TLS material for one request (the shape of https.RequestOptions that matters here). */
export interface RequestAuthOptions {
  headers?: Record<string, string>;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized?: boolean;
  servername?: string;
}

/** What KubeClient reads from a configuration: ours, or @kubernetes/client-node's KubeConfig. */
export interface KubeConfigLike {
  getCurrentContext(): string;
  getContextObject(name: string): { readonly namespace?: string | undefined } | null;
  getCurrentCluster(): { readonly server: string; readonly proxyUrl?: string | undefined } | null;
  getCurrentUser(): { readonly username?: string | undefined; readonly password?: string | undefined } | null;
  /** Sets headers and TLS material on `opts` (client-node also builds an agent here). */
  applyToHTTPSOptions(opts: object): Promise<void>;
}

/** Where a pod finds its ServiceAccount credentials. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export class KubeConfig implements KubeConfigLike {
  private currentContext: string;
  /** client-node, per user, for plugin credentials (its plugins cache tokens on the instance). */
  private readonly delegates = new Map<string, Promise<KubeConfigLike>>();

  constructor(
    readonly clusters: readonly KubeCluster[],
    readonly users: readonly KubeUser[],
    readonly contexts: readonly KubeContext[],
    currentContext: string,
  ) {
    this.currentContext = currentContext;
  }

  getContexts(): readonly KubeContext[] {
    return this.contexts;
  }

  getCurrentContext(): string {
    return this.currentContext;
  }

  setCurrentContext(name: string): void {
    this.currentContext = name;
  }

  getContextObject(name: string): KubeContext | null {
    return this.contexts.find((c) => c.name === name) ?? null;
  }

  getCurrentCluster(): KubeCluster | null {
    const ctx = this.getContextObject(this.currentContext);
    return (ctx && this.clusters.find((c) => c.name === ctx.cluster)) ?? null;
  }

  getCurrentUser(): KubeUser | null {
    const ctx = this.getContextObject(this.currentContext);
    return (ctx && this.users.find((u) => u.name === ctx.user)) ?? null;
  }

  /** Headers and TLS material for the next request; files are read now (credentials rotate). */
  async applyOptions(opts: RequestAuthOptions): Promise<void> {
    const cluster = this.getCurrentCluster();
    const user = this.getCurrentUser();
    if (user?.exec || user?.authProvider) {
      await applyRequestOptions(await this.delegate(cluster, user), opts);
      return;
    }
    const headers = (opts.headers ??= {});
    if (cluster?.skipTLSVerify) opts.rejectUnauthorized = false;
    if (cluster?.tlsServerName) opts.servername = cluster.tlsServerName;
    const ca = await material(cluster?.caFile, cluster?.caData, 'certificate-authority');
    if (ca) opts.ca = ca;
    if (user === null) return;
    const cert = await material(user.certFile, user.certData, 'client-certificate');
    if (cert) opts.cert = cert;
    const key = await material(user.keyFile, user.keyData, 'client-key');
    if (key) opts.key = key;
    if (user.impersonateUser) headers['Impersonate-User'] = user.impersonateUser;
    const token = user.token || (user.tokenFile && (await readText(user.tokenFile, 'tokenFile')).trim());
    if (token) headers.Authorization = `Bearer ${token}`;
  }

  applyToHTTPSOptions(opts: object): Promise<void> {
    return this.applyOptions(opts as RequestAuthOptions);
  }

  private delegate(cluster: KubeCluster | null, user: KubeUser): Promise<KubeConfigLike> {
    let d = this.delegates.get(user.name);
    if (d === undefined) {
      d = loadClientNode(cluster, user);
      d.catch(() => this.delegates.delete(user.name));
      this.delegates.set(user.name, d);
    }
    return d;
  }
}

/**
 * Headers and TLS material from any KubeConfigLike. client-node's public applyToHTTPSOptions also
 * builds an agent, and refuses http:// servers that kubectl accepts; its applyOptions (private in its
 * types, present at run time) does only the part needed here.
 */
export async function applyRequestOptions(kc: KubeConfigLike, opts: RequestAuthOptions): Promise<void> {
  const direct = kc as unknown as { applyOptions?: (o: RequestAuthOptions) => Promise<void> };
  if (typeof direct.applyOptions === 'function') await direct.applyOptions(opts);
  else await kc.applyToHTTPSOptions(opts);
}

async function loadClientNode(cluster: KubeCluster | null, user: KubeUser): Promise<KubeConfigLike> {
  let mod: { KubeConfig: new () => KubeConfigLike & { loadFromOptions(o: object): void } };
  try {
    mod = (await import('@kubernetes/client-node')) as unknown as typeof mod;
  } catch (err) {
    throw missingPackage(
      '@kubernetes/client-node',
      `the kubeconfig user "${user.name}" (credentials from an exec or auth-provider plugin)`,
      err,
    );
  }
  const kc = new mod.KubeConfig();
  kc.loadFromOptions({
    clusters: cluster === null ? [] : [cluster],
    users: [user],
    contexts: [{ name: 'grpc-kube', cluster: cluster?.name ?? '', user: user.name }],
    currentContext: 'grpc-kube',
  });
  return kc;
}

async function material(
  file: string | undefined,
  data: string | undefined,
  field: string,
): Promise<Buffer | null> {
  if (file) return readFile(file).catch((err: unknown) => Promise.reject(unreadable(file, field, err)));
  if (data) return Buffer.from(data, 'base64');
  return null;
}

async function readText(file: string, field: string): Promise<string> {
  return readFile(file, 'utf8').catch((err: unknown) => Promise.reject(unreadable(file, field, err)));
}

function unreadable(file: string, field: string, err: unknown): GrpcKubeError {
  return new GrpcKubeError(
    'GK_ERR_KUBE_CONFIG',
    `cannot read the kubeconfig's ${field} "${file}": ${String(err)}`,
    {
      cause: err,
    },
  );
}

let yaml: { load(text: string): unknown } | undefined;

/** Parse kubeconfig text (YAML or JSON). Relative file paths are taken from `dir` (the file's folder). */
export function parseKubeConfig(text: string, dir?: string): KubeConfig {
  let doc: unknown;
  try {
    if (text.trimStart().startsWith('{')) doc = JSON.parse(text);
    else {
      yaml ??= createRequire(import.meta.url)('js-yaml') as { load(text: string): unknown };
      doc = yaml.load(text);
    }
  } catch (err) {
    throw invalid(`is not valid YAML/JSON: ${String(err)}`, err);
  }
  if (doc === null || doc === undefined) doc = {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw invalid('is not a mapping');
  const o = doc as Record<string, unknown>;
  const path = (p: string | undefined): string | undefined =>
    p === undefined || dir === undefined || isAbsolute(p) ? p : join(dir, p);
  const clusters = entries(o, 'clusters', 'cluster', (name, c, at) => ({
    name,
    server: str(c, 'server', at, true).replace(/\/$/, ''),
    caFile: path(str(c, 'certificate-authority', at)),
    caData: str(c, 'certificate-authority-data', at),
    skipTLSVerify: c['insecure-skip-tls-verify'] === true,
    tlsServerName: str(c, 'tls-server-name', at),
    proxyUrl: str(c, 'proxy-url', at),
  }));
  const users = entries(o, 'users', 'user', (name, u, at) => ({
    name,
    token: str(u, 'token', at),
    tokenFile: path(str(u, 'tokenFile', at) ?? str(u, 'token-file', at)),
    certFile: path(str(u, 'client-certificate', at)),
    certData: str(u, 'client-certificate-data', at),
    keyFile: path(str(u, 'client-key', at)),
    keyData: str(u, 'client-key-data', at),
    username: str(u, 'username', at),
    password: str(u, 'password', at),
    impersonateUser: str(u, 'as', at),
    authProvider: obj(u, 'auth-provider', at),
    exec: obj(u, 'exec', at),
  }));
  const contexts = entries(o, 'contexts', 'context', (name, c, at) => ({
    name,
    cluster: str(c, 'cluster', at, true),
    user: str(c, 'user', at),
    namespace: str(c, 'namespace', at) || undefined,
  }));
  const current = o['current-context'];
  return new KubeConfig(clusters, users, contexts, typeof current === 'string' ? current : '');
}

/** Several kubeconfigs as kubectl merges KUBECONFIG: the first to define a name or current-context wins. */
export function mergeKubeConfigs(configs: readonly KubeConfig[]): KubeConfig {
  const firsts = <T extends { name: string }>(lists: ReadonlyArray<readonly T[]>): T[] => {
    const byName = new Map<string, T>();
    for (const l of lists) for (const e of l) if (!byName.has(e.name)) byName.set(e.name, e);
    return [...byName.values()];
  };
  return new KubeConfig(
    firsts(configs.map((c) => c.clusters)),
    firsts(configs.map((c) => c.users)),
    firsts(configs.map((c) => c.contexts)),
    configs.map((c) => c.getCurrentContext()).find((n) => n !== '') ?? '',
  );
}

/**
 * The configuration of a pod: the API server from KUBERNETES_SERVICE_HOST/PORT, the ServiceAccount's
 * token (a file, re-read per request) and CA, and its namespace.
 */
export function inClusterKubeConfig(
  host: string,
  port: string,
  namespace?: string,
  dir = SERVICE_ACCOUNT_DIR,
): KubeConfig {
  // As client-node did: the insecure ports of old API servers and `kubectl proxy` are plain HTTP.
  const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
  const server = `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`;
  return new KubeConfig(
    [{ name: 'in-cluster', server, caFile: join(dir, 'ca.crt'), skipTLSVerify: false }],
    [{ name: 'in-cluster', tokenFile: join(dir, 'token') }],
    [{ name: 'in-cluster', cluster: 'in-cluster', user: 'in-cluster', namespace }],
    'in-cluster',
  );
}

function entries<T>(
  o: Record<string, unknown>,
  list: string,
  field: string,
  make: (name: string, body: Record<string, unknown>, at: string) => T,
): T[] {
  const v = o[list];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid(`${list} is not a list`);
  return v.map((e: unknown, i) => {
    const at = `${list}[${i}]`;
    if (typeof e !== 'object' || e === null) throw invalid(`${at} is not a mapping`);
    const name = str(e as Record<string, unknown>, 'name', at, true);
    const body = obj(e as Record<string, unknown>, field, at) ?? {};
    return make(name, body as Record<string, unknown>, `${at}.${field}`);
  });
}

function str(o: Record<string, unknown>, key: string, at: string, required: true): string;
function str(o: Record<string, unknown>, key: string, at: string): string | undefined;
function str(o: Record<string, unknown>, key: string, at: string, required = false): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') {
    if (required) throw invalid(`${at}.${key} is missing`);
    return undefined;
  }
  if (typeof v !== 'string') throw invalid(`${at}.${key} must be a string, got ${typeof v}`);
  return v;
}

function obj(o: Record<string, unknown>, key: string, at: string): object | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid(`${at}.${key} must be a mapping`);
  return v;
}

function invalid(what: string, cause?: unknown): GrpcKubeError {
  return new GrpcKubeError(
    'GK_ERR_KUBE_CONFIG',
    `the kubeconfig ${what}`,
    cause === undefined ? {} : { cause },
  );
}
