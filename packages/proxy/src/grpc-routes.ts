// Weighted and header routes for the proxy, from the same GRPCRoute objects (Gateway API, GAMMA
// mesh convention: parentRef = the Service) the xDS control plane reads, compiled by the same code
// (packages/grpc-kube/src/route/grpcroute.ts) so both data paths agree on precedence and validation. Per RPC: take the
// target Service's route table, first rule whose method and headers match, then one backend Service
// by weight. Regular expressions are RE2, matched in linear time (packages/grpc-kube/src/adapter/re2.ts). An invalid
// route keeps its last good version (the error goes to onError); without any route a Service routes
// to itself. A backend's port is its Service port (Gateway API); the pool's endpoint source maps it to
// the pods' target port.

import type { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { KubeClient } from 'grpc-kube/internal/kube/client.js';
import {
  compileGrpcRoute,
  routesForTarget,
  type CompiledGrpcRoute,
  type GrpcRoute,
} from 'grpc-kube/internal/route/grpcroute.js';
import { parseClusterName, type RouteSpec } from 'grpc-kube/internal/route/spec.js';
import { GrpcRouteWatcher } from 'grpc-kube/internal/route/route-watcher.js';
import { routeMatches, type ServiceTarget } from './target.js';

export interface GrpcRouteTableOptions {
  /** Watch one namespace (a namespaced Role suffices); default all namespaces. */
  namespace?: string;
  random: () => number;
  onError: (err: GrpcKubeError) => void;
}

export class GrpcRouteTable {
  private readonly watcher: GrpcRouteWatcher;
  private readonly compiled = new Map<string, CompiledGrpcRoute>();
  private readonly tables = new Map<string, readonly RouteSpec[]>();
  private readonly opts: GrpcRouteTableOptions;
  /** Bumped on every route change (tests wait for it). */
  version = 0;

  constructor(client: KubeClient, opts: GrpcRouteTableOptions) {
    this.opts = opts;
    this.watcher = new GrpcRouteWatcher(client, {
      namespace: opts.namespace,
      onChange: (routes) => this.update(routes),
      onError: opts.onError,
    });
  }

  /** Resolves after the first list (or its failure: the proxy then routes every Service to itself). */
  start(): Promise<void> {
    return this.watcher.start();
  }

  stop(): Promise<void> {
    return this.watcher.stop();
  }

  /** The Service this RPC goes to: a backend of the first matching rule, or `target` itself. */
  resolve(target: ServiceTarget, path: string, header: (name: string) => string | undefined): ServiceTarget {
    if (target.port.kind !== 'number' || this.compiled.size === 0) return target;
    const key = `${target.namespace}/${target.service}:${target.port.port}`;
    let table = this.tables.get(key);
    if (table === undefined) {
      const ref = { namespace: target.namespace, service: target.service, port: target.port.port };
      table = routesForTarget(ref, this.compiled.values());
      this.tables.set(key, table);
    }
    for (const r of table) {
      if (!routeMatches(r, path, header)) continue;
      const clusters = r.clusters;
      let cluster = clusters[0]?.cluster;
      if (clusters.length > 1) {
        const total = clusters.reduce((s, c) => s + c.weight, 0);
        let x = this.opts.random() * total;
        for (const c of clusters) {
          x -= c.weight;
          if (x < 0) {
            cluster = c.cluster;
            break;
          }
        }
      }
      const ref = cluster === undefined ? undefined : parseClusterName(cluster);
      if (ref === undefined) return target;
      if (
        ref.namespace === target.namespace &&
        ref.service === target.service &&
        ref.port === target.port.port
      ) {
        return target;
      }
      return { namespace: ref.namespace, service: ref.service, port: { kind: 'number', port: ref.port } };
    }
    return target;
  }

  private update(routes: ReadonlyMap<string, GrpcRoute>): void {
    const seen = new Set<string>();
    for (const [key, route] of routes) {
      seen.add(key);
      try {
        const c = compileGrpcRoute(route, this.watcher.permits);
        if (c === undefined) this.compiled.delete(key);
        else this.compiled.set(key, c);
      } catch (err) {
        // Keep the last good version of this route; tell the operator what is wrong.
        this.opts.onError(err as GrpcKubeError);
      }
    }
    for (const key of [...this.compiled.keys()]) if (!seen.has(key)) this.compiled.delete(key);
    this.tables.clear();
    this.version++;
  }
}
