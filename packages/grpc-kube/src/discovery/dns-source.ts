// DNS polling for headless Services: resolve the name every `intervalMs` (jittered) and report the
// diff. grpc-js's own `dns:` resolver re-resolves only when a connection breaks and at most every 30 s,
// so pods added by a scale-up are never seen while connections stay healthy; polling sees them
// within one interval. An authoritative empty answer (NXDOMAIN/NODATA) empties the set; a failed
// lookup (timeout, SERVFAIL, refused) keeps the last answer.

import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import { GrpcKubeError, InvalidOptionError } from '../errors.js';
import { EndpointSet, type Endpoint } from './endpoint.js';
import type { EndpointListener, Subscription } from './kube-source.js';

export interface DnsPollOptions {
  intervalMs?: number;
  /** DNS server `host:port` to ask instead of the system resolver (the grpc `dns://server/` authority). */
  server?: string | undefined;
  random?: () => number;
  /** Replaces the lookup, for tests of the polling logic. Returns IPv4/IPv6 addresses. */
  resolve?: (host: string) => Promise<string[]>;
}

const EMPTY_ANSWER = new Set(['ENOTFOUND', 'ENODATA']);

export class DnsPollFeed {
  readonly host: string;
  readonly port: number;
  private readonly intervalMs: number;
  private readonly random: () => number;
  private readonly resolveFn: (host: string) => Promise<string[]>;

  constructor(host: string, port: number, opts: DnsPollOptions = {}) {
    this.host = host;
    this.port = port;
    const interval = opts.intervalMs ?? 5000;
    if (!Number.isFinite(interval) || interval < 50) {
      throw new InvalidOptionError('dnsPollIntervalMs', `must be a number of ms >= 50, got ${interval}`);
    }
    this.intervalMs = interval;
    this.random = opts.random ?? Math.random;
    this.resolveFn = opts.resolve ?? systemResolver(opts.server);
  }

  subscribe(listener: EndpointListener): Subscription {
    const set = new EndpointSet();
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let haveAnswer = false;
    const poll = async (): Promise<void> => {
      let ips: string[] | undefined;
      let failure: unknown;
      try {
        ips = isIP(this.host) ? [this.host] : await this.resolveFn(this.host);
      } catch (err) {
        if (EMPTY_ANSWER.has((err as NodeJS.ErrnoException).code ?? '')) ips = [];
        else failure = err;
      }
      if (stopped) return;
      if (ips !== undefined) {
        const eps: Endpoint[] = ips.map((address) => ({ address, port: this.port, state: 'ready' }));
        const diff = set.replaceGroup('dns', eps);
        const first = !haveAnswer;
        haveAnswer = true;
        if (first || diff.added.length + diff.removed.length + diff.changed.length > 0) {
          listener.onEndpoints(set, diff);
        }
      } else if (!haveAnswer) {
        listener.onError(
          new GrpcKubeError(
            'GK_ERR_DNS',
            `DNS lookup of "${this.host}" failed: ${String(failure)}; retrying every ${this.intervalMs} ms`,
            {
              cause: failure,
            },
          ),
        );
      }
      const jitter = 1 + 0.2 * (this.random() - 0.5);
      timer = setTimeout(() => void poll(), Math.round(this.intervalMs * jitter));
      timer.unref();
    };
    // First lookup on a later tick: listeners are never called synchronously.
    timer = setTimeout(() => void poll(), 0);
    timer.unref();
    return {
      unsubscribe: () => {
        stopped = true;
        if (timer !== undefined) clearTimeout(timer);
      },
    };
  }
}

function systemResolver(server: string | undefined): (host: string) => Promise<string[]> {
  if (server === undefined) {
    return async (host) => (await dns.lookup(host, { all: true })).map((a) => a.address);
  }
  const r = new dns.Resolver({ timeout: 2000, tries: 2 });
  r.setServers([server]);
  return async (host) => {
    const [v4, v6] = await Promise.allSettled([r.resolve4(host), r.resolve6(host)]);
    if (v4.status === 'rejected' && v6.status === 'rejected') throw v4.reason;
    return [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
  };
}
