// Every lab strategy, in report order. A new strategy is a file beside this one and a line here.
import type { LabStrategy } from '../strategy.js';
import { clusterip } from './clusterip.js';
import { headlessDnsRoundRobin, headlessPickFirst, maxConnectionAge } from './headless.js';
import { kubernetes, kubernetesEwma, kubernetesP2c } from './kubernetes.js';
import { proxy, sidecar } from './proxy.js';
import { xds } from './xds.js';

export const STRATEGIES: readonly LabStrategy[] = Object.freeze([
  clusterip,
  headlessPickFirst,
  headlessDnsRoundRobin,
  maxConnectionAge,
  kubernetes,
  kubernetesP2c,
  kubernetesEwma,
  proxy,
  sidecar,
  xds,
]);

export function strategyByName(name: string): LabStrategy | undefined {
  return STRATEGIES.find((s) => s.name === name);
}
