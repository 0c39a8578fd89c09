// One Kubernetes watch per (API server, namespace, Service) per process, shared by every channel that
// targets the Service and stopped when the last subscriber leaves. A process with 100 channels to one
// Service opens exactly one watch.

import type { KubeClient } from '../kube/client.js';
import {
  KubernetesEndpointSource,
  type EndpointListener,
  type KubeSourceOptions,
  type Subscription,
} from './kube-source.js';
import type { PortSelector } from './slices.js';

export class SourceRegistry {
  private readonly sources = new Map<string, KubernetesEndpointSource>();
  private readonly client: KubeClient;
  private readonly options: KubeSourceOptions;

  constructor(client: KubeClient, options: KubeSourceOptions = {}) {
    this.client = client;
    this.options = options;
  }

  get kubeClient(): KubeClient {
    return this.client;
  }

  /** Sources currently alive, for diagnostics and tests. */
  get activeSources(): KubernetesEndpointSource[] {
    return [...this.sources.values()];
  }

  subscribe(
    namespace: string,
    service: string,
    port: PortSelector,
    listener: EndpointListener,
  ): Subscription {
    const key = `${namespace}/${service}`;
    let source = this.sources.get(key);
    if (source === undefined) {
      source = new KubernetesEndpointSource(this.client, namespace, service, this.options);
      this.sources.set(key, source);
    }
    const src = source;
    const sub = src.subscribe(port, listener);
    let done = false;
    return {
      unsubscribe: () => {
        if (done) return;
        done = true;
        sub.unsubscribe();
        if (src.subscriberCount === 0 && this.sources.get(key) === src) {
          this.sources.delete(key);
          void src.stop();
        }
      },
    };
  }

  /** Stop every source (process shutdown, tests). */
  async close(): Promise<void> {
    const all = [...this.sources.values()];
    this.sources.clear();
    await Promise.all(all.map((s) => s.stop()));
    this.client.close();
  }
}
