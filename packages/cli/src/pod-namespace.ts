// The namespace a grpc-kube process works in when no flag names one: its pod's own. A control plane
// or proxy deployed with a namespaced Role may read GRPCRoutes there and nowhere else; a watch across
// the cluster answers 403 on every retry. The order is the one a pod offers: the downward API
// (POD_NAMESPACE), the ServiceAccount's namespace file, then — outside a cluster — the kubeconfig
// context's namespace, as kubectl uses it.

import { readFileSync } from 'node:fs';

export const SERVICE_ACCOUNT_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export type NamespaceSource = 'flag' | 'POD_NAMESPACE' | 'serviceaccount' | 'kubeconfig' | 'default';

export interface PodNamespaceSources {
  /** The command's --namespace, if given. */
  readonly flag?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  /** Default SERVICE_ACCOUNT_NAMESPACE_FILE. */
  readonly namespaceFile?: string;
  /** The kubeconfig context's namespace; called only when nothing before it answers. */
  readonly kubeConfigNamespace?: () => string | undefined;
}

/** The first of flag, POD_NAMESPACE, the ServiceAccount file, the kubeconfig context; else 'default'. */
export function podNamespace(s: PodNamespaceSources = {}): { namespace: string; source: NamespaceSource } {
  const nonEmpty = (v: string | undefined): string | undefined => {
    const t = v?.trim();
    return t === undefined || t === '' ? undefined : t;
  };
  const flag = nonEmpty(s.flag);
  if (flag !== undefined) return { namespace: flag, source: 'flag' };
  const env = nonEmpty((s.env ?? process.env)['POD_NAMESPACE']);
  if (env !== undefined) return { namespace: env, source: 'POD_NAMESPACE' };
  let file: string | undefined;
  try {
    file = nonEmpty(readFileSync(s.namespaceFile ?? SERVICE_ACCOUNT_NAMESPACE_FILE, 'utf8'));
  } catch {
    // Not in a pod (or no token mounted): next source.
  }
  if (file !== undefined) return { namespace: file, source: 'serviceaccount' };
  const kc = nonEmpty(s.kubeConfigNamespace?.());
  if (kc !== undefined) return { namespace: kc, source: 'kubeconfig' };
  return { namespace: 'default', source: 'default' };
}
