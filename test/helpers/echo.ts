// Real grpc-js servers for tests: each answers /grpckube.test.Echo/Who with its own name, after an
// optional delay, so a test can see which backend served each RPC. JSON on the wire keeps the helper
// free of generated code.

import * as grpc from '@grpc/grpc-js';

export interface WhoRequest {
  delayMs?: number;
  /** Answer only when the test calls the server's release(): in flight for as long as it needs. */
  hold?: boolean;
}
export interface WhoReply {
  server: string;
}

const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer): unknown => JSON.parse(b.toString() || '{}'),
};

export const echoService: grpc.ServiceDefinition = {
  who: {
    path: '/grpckube.test.Echo/Who',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};

export const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo');

export interface EchoServer {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** RPCs this server has started. */
  served: number;
  inFlight: number;
  /** performance.now() when the first RPC arrived, for propagation measurements. */
  firstServedAt: number | undefined;
  delayMs: number;
  /** Answer every RPC held so far (sent with `hold: true`). */
  release(): void;
  /** Graceful stop: refuse new streams, let running ones finish. */
  stop(): Promise<void>;
  kill(): void;
}

export async function startEchoServer(
  name: string,
  host: string,
  port = 0,
  delayMs = 0,
): Promise<EchoServer> {
  const server = new grpc.Server();
  const held: Array<() => void> = [];
  const s: EchoServer = {
    name,
    host,
    port: 0,
    served: 0,
    inFlight: 0,
    firstServedAt: undefined,
    delayMs,
    release: () => held.splice(0).forEach((reply) => reply()),
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
    kill: () => server.forceShutdown(),
  };
  server.addService(echoService, {
    who: (call: grpc.ServerUnaryCall<WhoRequest, WhoReply>, cb: grpc.sendUnaryData<WhoReply>) => {
      if (s.served === 0) s.firstServedAt = performance.now();
      s.served++;
      s.inFlight++;
      const delay = call.request.delayMs ?? s.delayMs;
      const reply = (): void => {
        s.inFlight--;
        cb(null, { server: name });
      };
      if (call.request.hold === true) held.push(reply);
      else if (delay > 0) setTimeout(reply, delay);
      else reply();
    },
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  (s as { port: number }).port = bound;
  return s;
}

export type Echo = grpc.Client & {
  who(
    req: WhoRequest,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: WhoReply) => void,
  ): grpc.ClientUnaryCall;
};

export function newEchoClient(target: string, options: grpc.ChannelOptions = {}): Echo {
  return new EchoClient(target, grpc.credentials.createInsecure(), {
    'grpc.enable_http_proxy': 0,
    ...options,
  }) as unknown as Echo;
}

export function who(client: Echo, deadlineMs = 2000, req: WhoRequest = {}): Promise<WhoReply> {
  return new Promise((resolve, reject) => {
    client.who(req, { deadline: Date.now() + deadlineMs }, (err, res) =>
      err ? reject(err) : resolve(res as WhoReply),
    );
  });
}

/** Whether one Who RPC answers within `deadlineMs` (for polling until a client serves). */
export function answers(client: Echo, deadlineMs = 1000): Promise<boolean> {
  return who(client, deadlineMs).then(
    () => true,
    () => false,
  );
}
