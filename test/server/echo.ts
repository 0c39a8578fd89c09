// A one-method gRPC service with raw-bytes messages, for tests that need real grpc-js servers and
// clients on 127.0.0.1 without a .proto file.

import * as grpc from '@grpc/grpc-js';

export const ECHO_PATH = '/grpckube.test.Echo/Echo';
const identity = (b: Buffer): Buffer => b;

export const ECHO_SERVICE: grpc.ServiceDefinition = {
  Echo: {
    path: ECHO_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export type EchoHandler = (
  call: grpc.ServerUnaryCall<Buffer, Buffer>,
  cb: grpc.sendUnaryData<Buffer>,
) => void;

export interface StartedServer {
  readonly server: grpc.Server;
  readonly port: number;
  readonly address: string;
}

export async function startEchoServer(
  handler: EchoHandler,
  options: grpc.ServerOptions = {},
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<StartedServer> {
  const server = new grpc.Server(options);
  server.addService(ECHO_SERVICE, { Echo: handler as grpc.handleUnaryCall<Buffer, Buffer> });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { server, port, address: `127.0.0.1:${port}` };
}

export interface EchoResult {
  readonly code: number;
  readonly details: string;
  readonly body: string;
}

export function echo(client: grpc.Client, body: string, deadlineMs = 30_000): Promise<EchoResult> {
  return new Promise((resolve) => {
    client.makeUnaryRequest<Buffer, Buffer>(
      ECHO_PATH,
      identity,
      identity,
      Buffer.from(body),
      new grpc.Metadata(),
      { deadline: Date.now() + deadlineMs },
      (err, value) => {
        if (err) resolve({ code: err.code, details: err.details, body: '' });
        else resolve({ code: grpc.status.OK, details: '', body: value?.toString() ?? '' });
      },
    );
  });
}

export function forceShutdownAll(...servers: Array<StartedServer | undefined>): void {
  for (const s of servers) s?.server.forceShutdown();
}
