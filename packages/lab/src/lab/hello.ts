// The lab's Hello service (proto/hello.proto): loads the proto once with @grpc/proto-loader and gives
// typed server and client helpers, so the pod process, the workload and tests speak the same contract.
// The proto is found from the package root, so this works from src/ under a TS runner and from dist/.

import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { packageRoot } from './paths.js';

export interface HelloRequest {
  client: string;
  counter: number;
}

export interface HelloReply {
  message: string;
  pod: string;
}

/** Full method path, as it appears on the wire. */
export const SAY_HELLO_PATH = '/hello.Greeter/SayHello';

export const HELLO_PROTO_PATH: string = join(packageRoot(), 'proto', 'hello.proto');

interface HelloDefinitions {
  service: grpc.ServiceDefinition;
  method: grpc.MethodDefinition<HelloRequest, HelloReply>;
}

let cached: HelloDefinitions | undefined;

function definitions(): HelloDefinitions {
  if (cached) return cached;
  // longs: Number — counters stay far below 2^53 in any bounded run, and numbers are cheaper than strings.
  const pkg = protoLoader.loadSync(HELLO_PROTO_PATH, { keepCase: true, longs: Number, defaults: true });
  const service = pkg['hello.Greeter'] as grpc.ServiceDefinition | undefined;
  const method = service?.['SayHello'] as grpc.MethodDefinition<HelloRequest, HelloReply> | undefined;
  if (!service || !method) {
    throw new GrpcKubeError('GK_ERR_LAB', `${HELLO_PROTO_PATH} lacks hello.Greeter/SayHello`);
  }
  cached = { service, method };
  return cached;
}

/** The Greeter service definition for `server.addService`. */
export function greeterService(): grpc.ServiceDefinition {
  return definitions().service;
}

/** Serializer/deserializer pair of SayHello, for callers that use `Client.makeUnaryRequest` directly. */
export function sayHelloMethod(): grpc.MethodDefinition<HelloRequest, HelloReply> {
  return definitions().method;
}

export type SayHelloHandler = (request: HelloRequest) => HelloReply | Promise<HelloReply>;

/** Register a Greeter implementation; a rejected promise becomes an INTERNAL status. */
export function addGreeter(server: grpc.Server, handler: SayHelloHandler): void {
  server.addService(greeterService(), {
    SayHello: (
      call: grpc.ServerUnaryCall<HelloRequest, HelloReply>,
      callback: grpc.sendUnaryData<HelloReply>,
    ) => {
      let result: HelloReply | Promise<HelloReply>;
      try {
        result = handler(call.request);
      } catch (err) {
        callback(asStatus(err));
        return;
      }
      if (result instanceof Promise) {
        result.then(
          (reply) => callback(null, reply),
          (err: unknown) => callback(asStatus(err)),
        );
      } else {
        callback(null, result);
      }
    },
  });
}

/** A handler may throw a status object (code, details, trailers) to answer with it; anything else is INTERNAL. */
function asStatus(err: unknown): Partial<grpc.StatusObject> {
  if (typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number') {
    return err as Partial<grpc.StatusObject>;
  }
  return { code: grpc.status.INTERNAL, details: String(err) };
}

/** A plain grpc-js client for the Hello service. */
export class GreeterClient {
  readonly client: grpc.Client;
  private readonly method = sayHelloMethod();

  constructor(
    target: string,
    credentials = grpc.credentials.createInsecure(),
    options: grpc.ChannelOptions = {},
  ) {
    this.client = new grpc.Client(target, credentials, options);
  }

  /** One SayHello with a deadline; the callback gets the grpc status code (0 = OK) and the reply. */
  sayHelloCb(
    request: HelloRequest,
    deadlineMs: number,
    callback: (err: grpc.ServiceError | null, reply: HelloReply | undefined) => void,
  ): void {
    this.client.makeUnaryRequest(
      this.method.path,
      this.method.requestSerialize,
      this.method.responseDeserialize,
      request,
      { deadline: Date.now() + deadlineMs },
      (err, reply) => callback(err, reply),
    );
  }

  sayHello(request: HelloRequest, deadlineMs = 1000): Promise<HelloReply> {
    return new Promise((resolve, reject) => {
      this.sayHelloCb(request, deadlineMs, (err, reply) => {
        if (err || !reply) reject(err ?? new Error('empty reply'));
        else resolve(reply);
      });
    });
  }

  close(): void {
    this.client.close();
  }
}

/** The greeting the east-west demo's server sends back: `<pod>: hello <client> #<counter>`. */
export function greeting(pod: string, request: HelloRequest): string {
  return `${pod}: hello ${request.client} #${request.counter}`;
}

/** At most this many distinct client names are counted apart; the rest share OTHER_CLIENTS. */
export const MAX_COUNTED_CLIENTS = 1024;
export const OTHER_CLIENTS = '*';

/**
 * SayHello requests a pod received, by HelloRequest.client: the lab's measure of attempts (each
 * retry or hedge reaches a pod as one more request), which the client's own record cannot count.
 * The names are the clients' own; a client that invents names fills at most MAX_COUNTED_CLIENTS
 * counters, the rest are counted together.
 */
export class ReceivedCounter {
  private readonly counts = new Map<string, number>();
  private changed = false;

  add(client: string): void {
    const key = this.counts.has(client) || this.counts.size < MAX_COUNTED_CLIENTS ? client : OTHER_CLIENTS;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.changed = true;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  /**
   * Write the counts to `file` (whole, through a rename of `${file}.tmp`) if they changed since
   * the last write, off the event loop. A pod rewrites its file every COUNT_FLUSH_MS while it
   * serves: a rename over the last file frees its blocks, which on a busy disk (ext4 with
   * `discard`, writeback in progress) held writeFileSync/renameSync — and every pod whose file
   * shares the directory, behind its lock — for up to ~1.9 s, and the pods answered no RPC
   * meanwhile: lost to DEADLINE_EXCEEDED in a rollout.
   */
  async flush(file: string): Promise<void> {
    if (!this.changed) return;
    this.changed = false;
    const tmp = `${file}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(this.snapshot()));
      await rename(tmp, file);
    } catch (err) {
      this.changed = true;
      throw err;
    }
  }

  /** Write the counts to `file` now, whole (the pod's last word when it closes: no RPC waits). */
  flushSync(file: string): void {
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.snapshot()));
    renameSync(tmp, file);
  }
}

const FINAL_SUFFIX = '.final.json';

/**
 * Where a pod keeps its counts in the lab's count directory: `live`, rewritten while it serves
 * (ReceivedCounter.flush), and `final`, written once when it closes. Two files, so that a live write
 * still on its way to the disk cannot land over the final counts; the final one wins when present.
 */
export function countFiles(dir: string, pod: string): { live: string; final: string } {
  return { live: join(dir, `${pod}.json`), final: join(dir, `${pod}${FINAL_SUFFIX}`) };
}
/** Requests received per client name, summed over every pod's count file in `dir` (see countFiles). */
export function readReceivedCounts(dir: string): Map<string, number> {
  // Per pod: its final file when it closed, else its live one.
  const byPod = new Map<string, string>();
  for (const name of readdirSync(dir)) {
    if (name.endsWith(FINAL_SUFFIX)) byPod.set(name.slice(0, -FINAL_SUFFIX.length), name);
    else if (name.endsWith('.json')) {
      const pod = name.slice(0, -'.json'.length);
      if (!byPod.get(pod)?.endsWith(FINAL_SUFFIX)) byPod.set(pod, name);
    }
  }
  const total = new Map<string, number>();
  for (const name of byPod.values()) {
    let counts: unknown;
    try {
      counts = JSON.parse(readFileSync(join(dir, name), 'utf8'));
    } catch {
      continue; // a pod killed mid-write leaves only its .tmp; a torn file is not ours to trust
    }
    if (typeof counts !== 'object' || counts === null) continue;
    for (const [client, n] of Object.entries(counts as Record<string, unknown>))
      if (typeof n === 'number' && Number.isFinite(n)) total.set(client, (total.get(client) ?? 0) + n);
  }
  return total;
}
