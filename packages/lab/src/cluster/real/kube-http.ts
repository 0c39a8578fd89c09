// The few writes the lab kubelet makes to the real kube-apiserver (create, replace, merge-patch,
// delete with options, the binding subresource), as plain JSON over HTTPS with the credentials of a
// kubeconfig. Failures become the same typed KubeApiErrors as the discovery client's (404, 409 …),
// so callers branch on `status`, never on text.

import * as https from 'node:https';
import * as http from 'node:http';
import { KubeConfig } from '@kubernetes/client-node';

import { Backoff } from 'grpc-kube/internal/discovery/backoff.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { errorFromStatus, type ResourcePath } from 'grpc-kube/internal/kube/client.js';
import type { KubeStatus } from 'grpc-kube/internal/kube/types.js';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface LabApiOptions {
  /**
   * Retry a request for up to this long while the API is unreachable or answers 429 / 5xx (jittered
   * backoff, 200 ms → 2 s), e.g. the lab's own writes right after an outage it caused. Default 0.
   */
  readonly retryTransientMs?: number;
}

export class LabApi {
  private readonly server: URL;
  private readonly agent: https.Agent | http.Agent;
  private readonly kc: KubeConfig;
  private readonly retryTransientMs: number;
  private closed = false;

  constructor(kubeConfigYaml: string, opts: LabApiOptions = {}) {
    this.retryTransientMs = opts.retryTransientMs ?? 0;
    this.kc = new KubeConfig();
    this.kc.loadFromString(kubeConfigYaml);
    const cluster = this.kc.getCurrentCluster();
    if (cluster === null) throw new GrpcKubeError('GK_ERR_KUBE_CONFIG', 'the lab kubeconfig has no cluster');
    this.server = new URL(cluster.server);
    this.agent =
      this.server.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, maxSockets: 32 })
        : new http.Agent({ keepAlive: true, maxSockets: 32 });
  }

  /**
   * One request; resolves with the parsed answer. `rp` only names the resource in error messages.
   * PATCH bodies are JSON merge patches.
   */
  async request<T>(method: Method, path: string, body: unknown, rp: ResourcePath): Promise<T> {
    const deadline = Date.now() + this.retryTransientMs;
    const backoff = new Backoff({ initialMs: 200, maxMs: 2_000 });
    for (;;) {
      try {
        return await this.once<T>(method, path, body, rp);
      } catch (err) {
        if (!isTransient(err) || this.closed || Date.now() + 200 > deadline) throw err;
        // Not unref()ed: a caller is awaiting this request, the process must not exit under it.
        await new Promise((r) => setTimeout(r, backoff.next()));
      }
    }
  }

  private async once<T>(method: Method, path: string, body: unknown, rp: ResourcePath): Promise<T> {
    const opts: https.RequestOptions = { headers: {} };
    try {
      await this.kc.applyToHTTPSOptions(opts);
    } catch (err) {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        `could not apply the lab's Kubernetes credentials: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {
      ...(opts.headers as Record<string, string>),
      Accept: 'application/json',
    };
    if (payload !== undefined) {
      headers['Content-Type'] = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    const reqOpts: https.RequestOptions = {
      method,
      hostname: this.server.hostname,
      port: this.server.port,
      path,
      headers,
      agent: this.agent,
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      timeout: 30_000,
    };
    return new Promise<T>((resolve, reject) => {
      const req = this.server.protocol === 'https:' ? https.request(reqOpts) : http.request(reqOpts);
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)));
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            parsed = { message: text.slice(0, 200) };
          }
          if (status >= 300) reject(errorFromStatus(rp, method, status, parsed as Partial<KubeStatus>));
          else resolve(parsed as T);
        });
        res.on('error', reject);
      });
      req.on('error', (err) =>
        reject(
          new GrpcKubeError('GK_ERR_KUBE_UNREACHABLE', `${method} ${path}: ${err.message}`, { cause: err }),
        ),
      );
      req.end(payload);
    });
  }

  close(): void {
    this.closed = true;
    this.agent.destroy();
  }
}

/** HTTP status of a KubeApiError (0 for anything else). */
export function statusOf(err: unknown): number {
  const s = (err as { status?: unknown } | null)?.status;
  return typeof s === 'number' ? s : 0;
}

/** No answer, 429, or a server error (all GK_ERR_KUBE_UNREACHABLE): worth trying again shortly. */
export function isTransient(err: unknown): boolean {
  return err instanceof GrpcKubeError && err.code === 'GK_ERR_KUBE_UNREACHABLE';
}
