// ObjectStore.watch over HTTP, so code written against the embedded store's watch (the lab's pod
// timeline recorder, for one) can follow objects of the real cluster unchanged: synthetic ADDED events
// for the current objects, then the API's events; after 410 Expired a re-list is turned into the
// events that bring the caller's view up to date (ADDED / MODIFIED / DELETED), and other failures are
// retried with jittered backoff. Events arrive asynchronously (the embedded store's are synchronous).

import { Backoff } from 'grpc-kube/internal/discovery/backoff.js';
import { KubeClient, isExpired, type WatchHandle } from 'grpc-kube/internal/kube/client.js';
import type { KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';
import type { ObjectStore, ResourceType, WatchOptions } from '../store-api.js';

export type WatchStore = Pick<ObjectStore, 'watch'>;

export function httpWatchStore(
  kubeConfigYaml: string,
  onError?: (err: unknown) => void,
): WatchStore & { close(): void } {
  const client = KubeClient.fromKubeConfigString(kubeConfigYaml);
  const stops = new Set<() => void>();
  return {
    watch<T extends KubeObject>(
      rt: ResourceType,
      opts: WatchOptions,
      onEvent: (event: WatchEvent<T>) => void,
    ): () => void {
      const stop = follow<T>(client, rt, opts, onEvent, onError);
      stops.add(stop);
      return () => {
        stops.delete(stop);
        stop();
      };
    },
    close(): void {
      for (const s of [...stops]) s();
      stops.clear();
      client.close();
    },
  };
}

function follow<T extends KubeObject>(
  client: KubeClient,
  rt: ResourceType,
  opts: WatchOptions,
  onEvent: (event: WatchEvent<T>) => void,
  onError: ((err: unknown) => void) | undefined,
): () => void {
  const rp = { group: rt.group, version: rt.version, resource: rt.resource, namespace: opts.namespace };
  const known = new Map<string, string>(); // name key → resourceVersion
  const keyOf = (o: KubeObject): string => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
  let stopped = false;
  let handle: WatchHandle | undefined;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const emit = (ev: WatchEvent<T>): void => {
    if (!stopped) onEvent(ev);
  };
  void (async () => {
    const backoff = new Backoff({ initialMs: 200, maxMs: 5_000 });
    let rv: string | undefined;
    while (!stopped) {
      try {
        if (rv === undefined) {
          const list = await client.list<T>(rp, {
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            limit: 500,
          });
          if (stopped) return;
          const seen = new Set<string>();
          for (const o of list.items) {
            const k = keyOf(o);
            seen.add(k);
            const before = known.get(k);
            const now = o.metadata.resourceVersion ?? '';
            if (before === undefined) emit({ type: 'ADDED', object: o });
            else if (before !== now) emit({ type: 'MODIFIED', object: o });
            known.set(k, now);
          }
          for (const k of [...known.keys()]) {
            if (seen.has(k)) continue;
            known.delete(k);
            const [namespace, name] = k.split('/');
            emit({
              type: 'DELETED',
              object: { apiVersion: '', kind: rt.kind, metadata: { namespace, name } } as unknown as T,
            });
          }
          rv = list.metadata.resourceVersion ?? '0';
          backoff.reset();
        }
        handle = client.watch<T>(
          rp,
          {
            resourceVersion: rv,
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            allowWatchBookmarks: true,
            timeoutSeconds: 300,
            idleTimeoutMs: 360_000,
          },
          (ev) => {
            const o = ev.object as T;
            if (o.metadata?.resourceVersion) rv = o.metadata.resourceVersion;
            if (ev.type === 'BOOKMARK') return;
            if (ev.type === 'DELETED') known.delete(keyOf(o));
            else known.set(keyOf(o), o.metadata.resourceVersion ?? '');
            backoff.reset();
            emit(ev);
          },
        );
        await handle.done;
      } catch (err) {
        if (stopped) return;
        if (isExpired(err)) {
          rv = undefined;
          continue;
        }
        onError?.(err);
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, backoff.next());
          timer.unref();
        });
        wake = undefined;
      } finally {
        handle = undefined;
      }
    }
  })();
  return () => {
    stopped = true;
    handle?.abort();
    if (timer) clearTimeout(timer);
    wake?.();
  };
}
