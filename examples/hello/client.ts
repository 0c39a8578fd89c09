// The Hello example's client (the east-west demo's client, written with grpc-kube): sends CONCURRENCY (10)
// SayHello RPCs at once, waits for all of them, prints who answered, pauses INTERVAL_MS and loops.
// setup() registers the kubernetes: resolver (in a pod it reads the ServiceAccount token, so the pod
// needs get/list/watch on endpointslices — deploy/kubernetes); clientDefaults() adds the retry
// policy for UNAVAILABLE that makes rollouts lossless, keepalive, and no HTTP proxy. Other targets
// (dns:///…, ipv4:…) work unchanged, which is how deploy/ shows the failure modes of the field
// write-ups (docs/figures.md).
//
// One line per round: `round 7 10/10 ok  hello-6f7-abcde=4 hello-6f7-fghij=3 hello-6f7-klmno=3`.

import { pathToFileURL } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { setup } from 'grpc-kube/internal/resolver/setup.js';
import { clientDefaults } from 'grpc-kube/internal/client/index.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { GreeterClient } from '@grpc-kube/lab/internal/lab/hello.js';
import { clientConfigFromEnv, type HelloClientConfig } from './config.js';

export interface RoundResult {
  readonly round: number;
  /** Pod name → RPCs it answered in this round. */
  readonly byPod: ReadonlyMap<string, number>;
  /** gRPC status name → failed RPCs. */
  readonly failedByCode: ReadonlyMap<string, number>;
}

export interface RunOptions {
  readonly config: HelloClientConfig;
  /** Channel options; default clientDefaults() with config.lbPolicy and config.authority. */
  readonly channelOptions?: grpc.ChannelOptions;
  readonly onRound?: (result: RoundResult) => void;
  /** Stops the loop after the round in flight (or the pause) ends. */
  readonly signal?: AbortSignal;
}

export function formatRound(r: RoundResult, concurrency: number): string {
  const ok = [...r.byPod.values()].reduce((a, b) => a + b, 0);
  const pods = [...r.byPod.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([pod, n]) => `${pod}=${n}`)
    .join(' ');
  const failed = [...r.failedByCode.entries()].map(([code, n]) => `${code}=${n}`).join(' ');
  return `round ${r.round} ${ok}/${concurrency} ok  ${pods}${failed === '' ? '' : `  failed: ${failed}`}`;
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (ms === 0 || signal?.aborted === true) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    // Not unref'd: between rounds this timer is all that keeps the client's process alive (an idle
    // grpc-js channel holds no ref); abort clears it.
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Run rounds until config.rounds, or until aborted when it is 0. Resolves with every round's result
 * for a bounded run; a run without end keeps none (a pod runs for weeks): use onRound.
 */
export async function runHelloClient(opts: RunOptions): Promise<RoundResult[]> {
  const { config } = opts;
  const client = new GreeterClient(
    config.target,
    grpc.credentials.createInsecure(),
    opts.channelOptions ??
      clientDefaults({
        lbPolicy: config.lbPolicy,
        ...(config.authority !== undefined ? { extra: { 'grpc.default_authority': config.authority } } : {}),
      }),
  );
  const results: RoundResult[] = [];
  let counter = 0;
  try {
    for (let round = 1; config.rounds === 0 || round <= config.rounds; round++) {
      if (opts.signal?.aborted === true) break;
      const byPod = new Map<string, number>();
      const failedByCode = new Map<string, number>();
      await Promise.all(
        Array.from({ length: config.concurrency }, () =>
          client.sayHello({ client: config.clientId, counter: ++counter }, config.deadlineMs).then(
            (reply) => void byPod.set(reply.pod, (byPod.get(reply.pod) ?? 0) + 1),
            (err: unknown) => {
              const code = (err as Partial<grpc.ServiceError>).code;
              const name = typeof code === 'number' ? (grpc.status[code] ?? String(code)) : 'UNKNOWN';
              failedByCode.set(name, (failedByCode.get(name) ?? 0) + 1);
            },
          ),
        ),
      );
      const result: RoundResult = { round, byPod, failedByCode };
      if (config.rounds !== 0) results.push(result);
      opts.onRound?.(result);
      if (config.rounds !== 0 && round === config.rounds) break;
      await pause(config.intervalMs, opts.signal);
    }
  } finally {
    client.close();
  }
  return results;
}

/**
 * Register the resolvers a target needs: kubernetes: and dns-poll: always (cheap: no watch starts
 * until a channel uses them); xds: only when asked, since @grpc/grpc-js-xds reads its bootstrap
 * (GRPC_XDS_BOOTSTRAP_CONFIG) on first use.
 */
export async function registerResolvers(target: string): Promise<ReturnType<typeof setup>> {
  const gk = setup(); // the pod's ServiceAccount in a cluster, KUBECONFIG elsewhere
  if (target.startsWith('xds:')) {
    const xds = await import('@grpc/grpc-js-xds');
    xds.register();
  }
  return gk;
}

async function main(): Promise<void> {
  const config = clientConfigFromEnv(process.env);
  const gk = await registerResolvers(config.target);
  const ac = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => ac.abort());
  process.stdout.write(
    `${config.clientId}: ${config.concurrency} concurrent RPCs per round to ${config.target} (${config.lbPolicy})\n`,
  );
  try {
    await runHelloClient({
      config,
      signal: ac.signal,
      onRound: (r) => process.stdout.write(`${formatRound(r, config.concurrency)}\n`),
    });
  } finally {
    await gk.close();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    const e = err instanceof GrpcKubeError ? `${err.code}: ${err.message}` : String(err);
    process.stderr.write(`hello-client: ${e}\n`);
    process.exit(1);
  });
}
