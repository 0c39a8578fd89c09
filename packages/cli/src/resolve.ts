// `grpc-kube resolve <target>`: prints the live endpoint set of a target and every change with a
// timestamp, like `kubectl get -w`, for debugging discovery in a real cluster. Reads the same
// discovery code the resolvers use, so what it prints is what channels see.

import { DnsPollFeed } from 'grpc-kube/internal/discovery/dns-source.js';
import type { Endpoint, EndpointDiff, EndpointView } from 'grpc-kube/internal/discovery/endpoint.js';
import { endpointKey } from 'grpc-kube/internal/discovery/endpoint.js';
import type { EndpointListener, Subscription } from 'grpc-kube/internal/discovery/kube-source.js';
import { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import { GrpcKubeError, InvalidTargetError } from 'grpc-kube/internal/errors.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { loadKubeConfig } from 'grpc-kube/internal/kube/config.js';
import { parseKubernetesTarget } from 'grpc-kube/internal/resolver/target.js';

export interface ResolveCommandOptions {
  target: string;
  kubeconfig?: string | undefined;
  context?: string | undefined;
  /** Print the first set (or error) and return. */
  once?: boolean;
  out?: (line: string) => void;
  now?: () => Date;
  signal?: AbortSignal;
}

export async function resolveCommand(o: ResolveCommandOptions): Promise<number> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const now = o.now ?? (() => new Date());
  const stamp = (): string => now().toISOString();
  const m =
    /^([a-z][a-z0-9+.-]*):\/\/([^/]*)\/(.*)$/.exec(o.target) ?? /^([a-z][a-z0-9+.-]*):(.*)$/.exec(o.target);
  if (m === null) throw new InvalidTargetError(o.target, 'expected scheme:///name:port');
  const scheme = m[1];
  const authority = m.length === 4 ? m[2] : undefined;
  const path = (m.length === 4 ? m[3] : m[2]) ?? '';
  let subscribe: (l: EndpointListener) => Subscription;
  let cleanup = async (): Promise<void> => {};
  if (scheme === 'kubernetes') {
    const t = parseKubernetesTarget(authority, path, o.target);
    const client = new KubeClient(loadKubeConfig({ kubeconfig: o.kubeconfig, context: o.context }));
    const registry = new SourceRegistry(client);
    const ns = t.namespace ?? client.defaultNamespace;
    out(`${stamp()}  WATCH    Service ${ns}/${t.service} on ${client.server}`);
    subscribe = (l) => registry.subscribe(ns, t.service, t.port, l);
    cleanup = () => registry.close();
  } else if (scheme === 'dns-poll' || scheme === 'dns') {
    const hp = /^(.*):(\d+)$/.exec(path.replace(/^\/+/, ''));
    if (hp === null) throw new InvalidTargetError(o.target, 'expected dns-poll:///host:port');
    const feed = new DnsPollFeed(hp[1] ?? '', Number(hp[2]), {
      server: authority || undefined,
      intervalMs: 1000,
    });
    subscribe = (l) => feed.subscribe(l);
  } else {
    throw new InvalidTargetError(o.target, `unknown scheme "${scheme}" (kubernetes: or dns-poll:)`);
  }
  let synced = false;
  let failed = false;
  return await new Promise<number>((resolve) => {
    let sub: Subscription | undefined = undefined;
    const finish = (code: number): void => {
      sub?.unsubscribe();
      void cleanup().then(() => resolve(code));
    };
    o.signal?.addEventListener('abort', () => finish(failed ? 1 : 0), { once: true });
    sub = subscribe({
      onEndpoints(view: EndpointView, diff: EndpointDiff) {
        failed = false;
        const eps = view.endpoints();
        if (!synced) {
          synced = true;
          const ready = eps.filter((e) => e.state === 'ready').length;
          out(`${stamp()}  SYNC     ${eps.length} endpoints (${ready} ready)`);
          for (const e of eps) out(`    ${row(e)}`);
          if (o.once) finish(0);
          return;
        }
        for (const e of diff.added) out(`${stamp()}  ADDED    ${row(e)}`);
        for (const c of diff.changed) out(`${stamp()}  CHANGED  ${row(c.after)}  (was ${c.before.state})`);
        for (const e of diff.removed) out(`${stamp()}  REMOVED  ${endpointKey(e)}`);
      },
      onError(err: GrpcKubeError) {
        failed = true;
        out(`${stamp()}  ERROR    ${err.code}: ${err.message}`);
        if (o.once) finish(1);
      },
    });
  });
}

function row(e: Endpoint): string {
  const extra = [e.pod, e.node, e.zone].filter((x) => x !== undefined).join('  ');
  return `${endpointKey(e).padEnd(22)} ${e.state.padEnd(9)} ${extra}`.trimEnd();
}
