// Finding a kubeconfig as kubectl does, with errors that name what is missing: the --kubeconfig file
// that does not exist, the context that is not in it, or the absence of any configuration at all
// (where client-node would silently fall back to http://localhost:8080). Parsing is kubeconfig.ts.

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { GrpcKubeError } from '../errors.js';
import {
  inClusterKubeConfig,
  mergeKubeConfigs,
  parseKubeConfig,
  SERVICE_ACCOUNT_DIR,
  type KubeConfig,
} from './kubeconfig.js';

export interface KubeConfigSource {
  /** A kubeconfig file (--kubeconfig); else KUBECONFIG, ~/.kube/config, then in-cluster. */
  kubeconfig?: string | undefined;
  /** A context of that kubeconfig (--context); else its current-context. */
  context?: string | undefined;
  /**
   * Environment, home directory and ServiceAccount mount, for tests. The mount is
   * GRPC_KUBE_SERVICEACCOUNT_DIR when set, else /var/run/secrets/kubernetes.io/serviceaccount.
   */
  env?: NodeJS.ProcessEnv;
  home?: string;
  serviceAccountDir?: string;
}

export function kubeConfigFromString(text: string): KubeConfig {
  return parseKubeConfig(text);
}

/** Load a kubeconfig as kubectl would, or throw a typed error saying what to do. */
export function loadKubeConfig(src: KubeConfigSource = {}): KubeConfig {
  const env = src.env ?? process.env;
  let kc: KubeConfig;
  if (src.kubeconfig !== undefined) {
    if (!existsSync(src.kubeconfig)) {
      throw new GrpcKubeError(
        'GK_ERR_KUBECONFIG_NOT_FOUND',
        `the kubeconfig file "${src.kubeconfig}" does not exist; pass the path of a kubeconfig (kubectl config view --raw > FILE)`,
      );
    }
    kc = fromFile(src.kubeconfig);
  } else {
    const files = (env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '');
    const present = files.filter((f) => existsSync(f));
    if (files.length > 0 && present.length === 0) {
      throw new GrpcKubeError(
        'GK_ERR_KUBECONFIG_NOT_FOUND',
        `KUBECONFIG names ${files.map((f) => `"${f}"`).join(', ')}, and none exists; fix KUBECONFIG or unset it`,
      );
    }
    const home = join(src.home ?? homedir(), '.kube', 'config');
    // GRPC_KUBE_SERVICEACCOUNT_DIR: where the token, ca.crt and namespace are when they are not at the
    // standard mount — the lab kubelet projects them per pod into a directory of its own.
    const saDir = src.serviceAccountDir ?? (env.GRPC_KUBE_SERVICEACCOUNT_DIR || SERVICE_ACCOUNT_DIR);
    if (present.length > 0) kc = mergeKubeConfigs(present.map(fromFile));
    else if (existsSync(home)) kc = fromFile(home);
    else if (existsSync(join(saDir, 'token')) && env.KUBERNETES_SERVICE_HOST) {
      kc = inClusterKubeConfig(
        env.KUBERNETES_SERVICE_HOST,
        env.KUBERNETES_SERVICE_PORT ?? '443',
        readOptional(join(saDir, 'namespace')),
        saDir,
      );
    } else {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        `no Kubernetes configuration: no --kubeconfig, no KUBECONFIG, no ${home}, and not in a pod with a ` +
          'ServiceAccount token; pass --kubeconfig FILE or set KUBECONFIG',
      );
    }
  }
  if (src.context !== undefined) {
    const names = kc.getContexts().map((c) => c.name);
    if (!names.includes(src.context)) {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONTEXT_NOT_FOUND',
        `the kubeconfig has no context "${src.context}"; it has ${names.length === 0 ? 'none' : names.map((n) => `"${n}"`).join(', ')} (kubectl config get-contexts)`,
      );
    }
    kc.setCurrentContext(src.context);
  }
  return kc;
}

/** The default configuration (library use: setup() without a kubeConfig). */
export function loadDefaultKubeConfig(): KubeConfig {
  return loadKubeConfig();
}

function fromFile(file: string): KubeConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new GrpcKubeError(
      'GK_ERR_KUBECONFIG_NOT_FOUND',
      `cannot read the kubeconfig file "${file}": ${String(err)}`,
      {
        cause: err,
      },
    );
  }
  return parseKubeConfig(text, join(file, '..'));
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
