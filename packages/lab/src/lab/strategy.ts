// The lab's strategy contract: how a client reaches the Service. Each strategy is one file in
// strategies/ exporting a LabStrategy; adding one is adding a file and a line in strategies/index.ts.
// A strategy gets the running lab environment and returns the dial target and channel options its
// clients use; it may run helpers of its own (a forwarder, a proxy, a control plane) until close().

import type { ChannelOptions } from '@grpc/grpc-js';
import type { LabCluster } from './cluster.js';
import type { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import type { LabDnsServer } from './dns-server.js';
import type { LabTls } from './tls.js';

/** Which Deployment flavour a strategy's clients talk to. */
export type AppFlavour = 'plain' | 'maxage';

export interface LabApp {
  /** Service (and main Deployment) name. */
  readonly service: string;
  /** Fully qualified DNS name of the headless Service. */
  readonly dnsName: string;
}

export interface LabEnv {
  readonly cluster: LabCluster;
  readonly namespace: string;
  /** Container port = Service port of every app. */
  readonly port: number;
  readonly apps: Readonly<Record<AppFlavour, LabApp>>;
  /** The lab's DNS server, answering each headless Service's ready pod IPs (as CoreDNS does). */
  readonly dns: LabDnsServer;
  /** Admin kubeconfig of the embedded API server. */
  readonly kubeConfigYaml: string;
  /** Watches the lab's own stand-ins (kube-proxy, CoreDNS) read EndpointSlices through. */
  readonly endpoints: SourceRegistry;
  /** Seeded randomness for everything the lab decides. */
  readonly random: () => number;
  /** A fresh loopback address for a virtual IP or a proxy listener. */
  nextVip(): string;
  /** Time scale of this run (1, or less with --quick), for strategies with timings of their own. */
  readonly timeScale: number;
  /**
   * Channel options selecting `policy` through the service config: the lb policy alone, or with
   * --client-defaults the grpc-kube client defaults (retry on UNAVAILABLE, keepalive) around it.
   */
  clientOptions(policy: string): ChannelOptions;
  /**
   * `lab --tls`: the run's CA and certificates. Pods serve mutual TLS and clients hold the lab CA and
   * a client certificate (the runner gives every strategy's clients tls.channelCredentials());
   * a strategy names the identity to verify where its authority is not in the pods' certificates
   * and makes its own hops (proxies, control plane) speak TLS. Undefined: plaintext.
   */
  readonly tls: LabTls | undefined;
  /** A progress line for the lab's output (what a strategy's helpers said, e.g. a proxy's exit line). */
  log(line: string): void;
}

export interface StrategyHandle {
  readonly target: string;
  readonly channelOptions?: ChannelOptions;
  close(): Promise<void>;
}

export interface LabStrategy {
  readonly name: string;
  /** One line for the report: what this strategy is. */
  readonly description: string;
  readonly flavour: AppFlavour;
  /** Can follow canary weights (canary-shift runs only such strategies). */
  readonly canRoute: boolean;
  /**
   * Its clients dial a `dns:` target naming the lab's DNS server: grpc-js must resolve with c-ares
   * (dns-server.ts alternativeResolverError). The runner also checks every started target.
   */
  readonly dialsDns?: boolean;
  /**
   * The clients' connection ends at a hop of the lab's (a ClusterIP forwarder, a proxy), not at the
   * pod: which pod answered is known only from the Hello reply, so such a strategy cannot run a
   * user's own server (`--pod-command`).
   */
  readonly hidesPod?: boolean;
  /** Why this strategy cannot run with `lab --tls` (it is skipped with this reason); unset: it can. */
  readonly noTls?: string;
  start(env: LabEnv): Promise<StrategyHandle>;
}
