// The headless-Service strategies of the field write-ups: grpc-js's own `dns:` resolver against the lab's DNS
// server (which answers the Service's ready pod IPs, as CoreDNS does). grpc-js resolves once and
// again only when a connection breaks, and never more often than every 30 s.

import { dnsTarget } from '../dns-server.js';
import type { ChannelOptions } from '@grpc/grpc-js';
import type { LabEnv, LabStrategy } from '../strategy.js';

/** grpc-js's default minimum time between DNS resolutions. */
export const DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS = 30_000;

/**
 * With --quick every timing of the scenario is scaled; grpc-js's 30 s floor between resolutions is
 * scaled with them, so the quick run shows the same shape as the full one in less time.
 */
export function dnsOptions(env: Pick<LabEnv, 'timeScale'>): ChannelOptions {
  return env.timeScale === 1
    ? {}
    : {
        'grpc.dns_min_time_between_resolutions_ms': Math.round(
          DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS * env.timeScale,
        ),
      };
}

export const headlessPickFirst: LabStrategy = {
  name: 'headless-pick-first',
  description: 'headless Service + grpc-js dns: resolver, default pick_first',
  flavour: 'plain',
  canRoute: false,
  dialsDns: true,
  async start(env) {
    return {
      target: dnsTarget(env.dns.address, env.apps.plain.dnsName, env.port),
      channelOptions: { ...dnsOptions(env), ...env.clientOptions('pick_first') },
      close: async () => {},
    };
  },
};

export const headlessDnsRoundRobin: LabStrategy = {
  name: 'headless-dns-round-robin',
  description: 'headless Service + grpc-js dns: resolver + round_robin',
  flavour: 'plain',
  canRoute: false,
  dialsDns: true,
  async start(env) {
    return {
      target: dnsTarget(env.dns.address, env.apps.plain.dnsName, env.port),
      channelOptions: { ...dnsOptions(env), ...env.clientOptions('round_robin') },
      close: async () => {},
    };
  },
};

/** The east-west demo: the same client against servers that close connections after 10 s (+ 20 s grace). */
export const maxConnectionAge: LabStrategy = {
  name: 'max-connection-age',
  description: 'headless + dns round_robin, servers with max_connection_age 10 s + grace 20 s',
  flavour: 'maxage',
  canRoute: false,
  dialsDns: true,
  async start(env) {
    return {
      target: dnsTarget(env.dns.address, env.apps.maxage.dnsName, env.port),
      channelOptions: { ...dnsOptions(env), ...env.clientOptions('round_robin') },
      close: async () => {},
    };
  },
};

export const MAX_CONNECTION_AGE_MS = 10_000;
export const MAX_CONNECTION_AGE_GRACE_MS = 20_000;
