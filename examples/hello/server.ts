// The Hello example's server (the east-west demo's server, written with grpc-kube): answers SayHello with the
// name of the pod that answered, serves grpc.health.v1 through the server kit (readiness = '' and
// hello.Greeter, liveness = 'liveness') and runs the kit's SIGTERM drain: NOT_SERVING, wait
// DRAIN_PROPAGATION_MS for the endpoint removal to reach clients, GOAWAY, force-close after
// DRAIN_GRACE_MS. deploy/base/server.yaml sets terminationGracePeriodSeconds to match.
//
// Run: `node dist/examples/hello/server.js` (env: see config.ts). Start node directly (not npm, not
// sh -c) so SIGTERM reaches it.

import diagnostics from 'node:diagnostics_channel';
import { pathToFileURL } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  SERVER_CHANNEL_NAME,
  createServerKit,
  maxConnectionAgeOptions,
  type ServerKit,
  type ServerKitEvent,
  type ServerKitOptions,
} from 'grpc-kube/internal/server/index.js';
import { addGreeter, greeting } from '@grpc-kube/lab/internal/lab/hello.js';
import { serverConfigFromEnv, type HelloServerConfig } from './config.js';

export const GREETER_SERVICE = 'hello.Greeter';

export interface HelloServer {
  readonly port: number;
  readonly server: grpc.Server;
  readonly kit: ServerKit;
}

/**
 * Start the Hello server: kit first (services must be added before bind), bind, then serving.
 * `kit` options override what the config implies (tests pass `signals: [], exit: null`).
 */
export async function startHelloServer(
  config: HelloServerConfig,
  kitOverrides: Partial<ServerKitOptions> = {},
  log: (line: string) => void = () => {},
): Promise<HelloServer> {
  const server = new grpc.Server(
    config.maxConnectionAgeMs > 0
      ? maxConnectionAgeOptions({
          maxConnectionAgeMs: config.maxConnectionAgeMs,
          graceMs: config.maxConnectionAgeGraceMs,
        })
      : {},
  );
  const kit = createServerKit(server, {
    services: [GREETER_SERVICE],
    propagationDelayMs: config.propagationDelayMs,
    graceMs: config.graceMs,
    ...kitOverrides,
  });
  const name = config.version === '' ? config.podName : `${config.podName} (${config.version})`;
  addGreeter(server, (request) => {
    if (config.logRpcs) log(`${request.client} #${request.counter}`);
    return { message: greeting(name, request), pod: config.podName };
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${config.host}:${config.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => {
      if (err) {
        reject(
          new GrpcKubeError(
            'GK_ERR_INVALID_OPTION',
            `cannot listen on ${config.host}:${config.port}: ${err.message}`,
            {
              cause: err,
            },
          ),
        );
      } else resolve(p);
    });
  });
  // Nothing to warm up here; a real service would kit.hold() until its caches are loaded.
  kit.setServing();
  return { port, server, kit };
}

async function main(): Promise<void> {
  const config = serverConfigFromEnv(process.env);
  const log = (line: string): void => {
    process.stdout.write(`${new Date().toISOString()} ${config.podName} ${line}\n`);
  };
  diagnostics.subscribe(SERVER_CHANNEL_NAME, (message) => {
    const e = message as ServerKitEvent;
    log(`kit ${e.phase}${e.reason !== undefined ? ` (${e.reason})` : ''}`);
  });
  const { port } = await startHelloServer(config, {}, log);
  log(
    `listening on ${config.host}:${port}; drain: ${config.propagationDelayMs} ms propagation + ` +
      `${config.graceMs} ms grace` +
      (config.maxConnectionAgeMs > 0
        ? `; max connection age ${config.maxConnectionAgeMs} ms + ${config.maxConnectionAgeGraceMs} ms`
        : ''),
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    const e = err instanceof GrpcKubeError ? `${err.code}: ${err.message}` : String(err);
    process.stderr.write(`hello-server: ${e}\n`);
    process.exit(1);
  });
}
