// The ServiceAccount token projected into an embedded-cluster pod: the embedded API server's token
// scheme is a bearer token mapped to an Identity (user system:serviceaccount:NS:NAME, its groups, and
// the access rules the cluster was given for that ServiceAccount — the embedded server has no RBAC
// objects), so each pod gets a fresh random token registered for its ServiceAccount, written with the
// server's CA and the namespace into a directory of its own. The container gets
// KUBERNETES_SERVICE_HOST/PORT (the API server's own address: embedded pods share the host network)
// and GRPC_KUBE_SERVICEACCOUNT_DIR, which grpc-kube's in-cluster config reads. The token is removed
// with the pod. The real cluster's counterpart is real/service-account.ts (TokenRequest).

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AccessRule, EmbeddedApiServer } from './apiserver.js';
import type { Pod } from './controllers/kinds.js';

export interface EmbeddedServiceAccountsOptions {
  /** The CA that signed the API server's serving certificate (ca.crt). */
  readonly caPem: string;
  /** What a ServiceAccount may do (its Roles, as rules); default nothing — every request is a 403. */
  readonly rules?: (namespace: string, serviceAccount: string) => readonly AccessRule[];
}

export class EmbeddedServiceAccounts {
  private readonly mounts = new Map<string, { dir: string; token: string }>();

  constructor(
    private readonly apiServer: EmbeddedApiServer,
    private readonly opts: EmbeddedServiceAccountsOptions,
  ) {}

  async project(pod: Pod): Promise<Record<string, string>> {
    const u = new URL(this.apiServer.url);
    const env: Record<string, string> = {
      KUBERNETES_SERVICE_HOST: u.hostname.replace(/^\[|\]$/g, ''),
      KUBERNETES_SERVICE_PORT: u.port,
      KUBERNETES_SERVICE_PORT_HTTPS: u.port,
    };
    if (pod.spec.automountServiceAccountToken === false) return env;
    const ns = pod.metadata.namespace ?? 'default';
    const sa = pod.spec.serviceAccountName ?? 'default';
    const token = randomBytes(32).toString('base64url');
    this.apiServer.addToken(token, {
      user: `system:serviceaccount:${ns}:${sa}`,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'],
      rules: [...(this.opts.rules?.(ns, sa) ?? [])],
    });
    const dir = await mkdtemp(join(tmpdir(), `gk-sa-${ns}-${pod.metadata.name ?? ''}-`.slice(0, 60)));
    this.mounts.set(keyOf(pod), { dir, token });
    await writeFile(join(dir, 'token'), token, { mode: 0o600 });
    await writeFile(join(dir, 'ca.crt'), this.opts.caPem);
    await writeFile(join(dir, 'namespace'), ns);
    return { ...env, GRPC_KUBE_SERVICEACCOUNT_DIR: dir };
  }

  async release(pod: Pod): Promise<void> {
    const m = this.mounts.get(keyOf(pod));
    if (m === undefined) return;
    this.mounts.delete(keyOf(pod));
    this.apiServer.removeToken(m.token);
    await rm(m.dir, { recursive: true, force: true });
  }
}

function keyOf(pod: Pod): string {
  return pod.metadata.uid ?? `${pod.metadata.namespace ?? 'default'}/${pod.metadata.name ?? ''}`;
}
