// Our `dns-poll:` resolver (src/discovery/dns-source.ts) against the lab's DNS server, which answers
// the headless Service's ready pod IPs as CoreDNS does: the same DNS answers as the headless
// strategies, but asked every interval instead of only when a connection breaks, so a scale-up is
// seen within one interval while every connection stays healthy. round_robin over the answer.

import { DNS_POLL_INTERVAL_OPTION } from 'grpc-kube/internal/resolver/setup.js';
import type { LabStrategy } from '../strategy.js';

/** The resolver's default interval (setup's dnsPollIntervalMs); --quick scales it with the run. */
export const DNS_POLL_INTERVAL_MS = 5000;

export const dnsPoll: LabStrategy = {
  name: 'dns-poll',
  description: 'headless Service + grpc-kube dns-poll: resolver (DNS every 5 s) + round_robin',
  flavour: 'plain',
  canRoute: false,
  async start(env) {
    return {
      target: `dns-poll://${env.dns.address}/${env.apps.plain.dnsName}:${env.port}`,
      channelOptions: {
        // The resolver's floor is 50 ms; a quick run scales the interval as it scales the scenario.
        [DNS_POLL_INTERVAL_OPTION]: Math.max(50, Math.round(DNS_POLL_INTERVAL_MS * env.timeScale)),
        ...env.clientOptions('round_robin'),
      },
      close: async () => {},
    };
  },
};
