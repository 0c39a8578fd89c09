// Every lab strategy, in report order. A new strategy is a file beside this one and a line here.
import type { LabStrategy } from '../strategy.js';
import { clusterip } from './clusterip.js';
import { dnsPoll } from './dns-poll.js';
import { headlessDnsRoundRobin, headlessPickFirst, maxConnectionAge } from './headless.js';
import { kubernetes, kubernetesEwma, kubernetesP2c } from './kubernetes.js';
import { proxy, proxyNghttpx, sidecar } from './proxy.js';
import { xds } from './xds.js';

export const STRATEGIES: readonly LabStrategy[] = Object.freeze([
  clusterip,
  headlessPickFirst,
  headlessDnsRoundRobin,
  maxConnectionAge,
  dnsPoll,
  kubernetes,
  kubernetesP2c,
  kubernetesEwma,
  proxy,
  sidecar,
  xds,
]);

/** Run only when named with --strategy: they need software the default lab does not (nghttpx). */
export const OPTIONAL_STRATEGIES: readonly LabStrategy[] = Object.freeze([proxyNghttpx]);

export function strategyByName(name: string): LabStrategy | undefined {
  return [...STRATEGIES, ...OPTIONAL_STRATEGIES].find((s) => s.name === name);
}
