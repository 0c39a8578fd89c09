// The lab's stand-in for cluster DNS (CoreDNS serving a headless Service): a minimal authoritative
// server over UDP that answers A queries with the Ready pod addresses the lab sets, NOERROR with no
// answer for other types of a known name (AAAA, TXT), NXDOMAIN for unknown names. grpc-js's `dns:`
// resolver reaches it only through its c-ares path: GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true in the
// environment before @grpc/grpc-js is loaded, and the server named as the target's authority,
// `dns://127.0.0.1:<port>/hello.lab:50051` (see dnsTarget()).

import dgram from 'node:dgram';
import { createRequire } from 'node:module';
import { isIPv4 } from 'node:net';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface DnsServerOptions {
  /** Loopback address to listen on. Default 127.0.0.1. */
  host?: string;
  /** UDP port; 0 (default) picks a free one. */
  port?: number;
  /** TTL of A records, seconds. Default 5, as CoreDNS's kubernetes plugin. */
  ttlS?: number;
}

const TYPE_A = 1;
const TYPE_OPT = 41;
const CLASS_IN = 1;
const RCODE_NOERROR = 0;
const RCODE_FORMERR = 1;
const RCODE_NXDOMAIN = 3;
const RCODE_NOTIMP = 4;
/** Plain DNS over UDP without EDNS0 allows 512 bytes; larger answers are cut and marked TC. */
const UDP_LIMIT = 512;
const EDNS_PAYLOAD = 1232;

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

interface Question {
  name: string;
  type: number;
  cls: number;
  /** Byte offset just past the question section. */
  end: number;
  /** Requester's EDNS0 UDP payload size, if it sent an OPT record. */
  ednsPayload: number | null;
}

/** Read a (possibly compressed) name at `offset`; returns the name and the offset after it. */
function readName(msg: Buffer, offset: number): { name: string; next: number } {
  const labels: string[] = [];
  let pos = offset;
  let next = -1;
  for (let hops = 0; hops < 64; hops++) {
    const len = msg[pos];
    if (len === undefined) throw new RangeError('name runs past the message');
    if (len === 0) {
      if (next < 0) next = pos + 1;
      return { name: labels.join('.'), next };
    }
    if ((len & 0xc0) === 0xc0) {
      const lo = msg[pos + 1];
      if (lo === undefined) throw new RangeError('truncated pointer');
      if (next < 0) next = pos + 2;
      pos = ((len & 0x3f) << 8) | lo;
      continue;
    }
    if (len > 63 || pos + 1 + len > msg.length) throw new RangeError('bad label');
    labels.push(msg.toString('latin1', pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
  throw new RangeError('name too long or pointer loop');
}

function parseQuery(msg: Buffer): Question {
  if (msg.readUInt16BE(4) !== 1) throw new RangeError('exactly one question expected');
  const { name, next } = readName(msg, 12);
  if (next + 4 > msg.length) throw new RangeError('truncated question');
  const q: Question = {
    name: normalizeName(name),
    type: msg.readUInt16BE(next),
    cls: msg.readUInt16BE(next + 2),
    end: next + 4,
    ednsPayload: null,
  };
  // Skip answer/authority records (none expected in a query) and look for an OPT in additional.
  let pos = q.end;
  const rrs = msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10);
  for (let i = 0; i < rrs && pos < msg.length; i++) {
    const rr = readName(msg, pos);
    if (rr.next + 10 > msg.length) break;
    const type = msg.readUInt16BE(rr.next);
    const rdlen = msg.readUInt16BE(rr.next + 8);
    if (type === TYPE_OPT) q.ednsPayload = Math.max(UDP_LIMIT, msg.readUInt16BE(rr.next + 2));
    pos = rr.next + 10 + rdlen;
  }
  return q;
}

/** Build a response. `answers` are IPv4 addresses for an A question. */
function buildResponse(
  query: Buffer,
  q: Question | null,
  rcode: number,
  answers: readonly string[],
  ttlS: number,
): Buffer {
  const id = query.readUInt16BE(0);
  const reqFlags = query.readUInt16BE(2);
  const opcode = (reqFlags >> 11) & 0xf;
  const rd = (reqFlags >> 8) & 1;
  const question = q ? query.subarray(12, q.end) : Buffer.alloc(0);
  const opt = q?.ednsPayload != null;
  const limit = opt ? Math.min(q?.ednsPayload ?? UDP_LIMIT, EDNS_PAYLOAD) : UDP_LIMIT;
  const fixed = 12 + question.length + (opt ? 11 : 0);
  const fit = Math.max(0, Math.min(answers.length, Math.floor((limit - fixed) / 16)));
  const tc = fit < answers.length ? 1 : 0;

  const out = Buffer.alloc(fixed + fit * 16);
  out.writeUInt16BE(id, 0);
  // QR=1, opcode echoed, AA=1, TC, RD echoed, RA=0, rcode.
  out.writeUInt16BE(0x8000 | (opcode << 11) | 0x0400 | (tc << 9) | (rd << 8) | rcode, 2);
  out.writeUInt16BE(q ? 1 : 0, 4);
  out.writeUInt16BE(fit, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(opt ? 1 : 0, 10);
  question.copy(out, 12);
  let pos = 12 + question.length;
  for (let i = 0; i < fit; i++) {
    out.writeUInt16BE(0xc00c, pos); // pointer to the question's name
    out.writeUInt16BE(TYPE_A, pos + 2);
    out.writeUInt16BE(CLASS_IN, pos + 4);
    out.writeUInt32BE(ttlS, pos + 6);
    out.writeUInt16BE(4, pos + 10);
    const parts = (answers[i] as string).split('.');
    for (let k = 0; k < 4; k++) out[pos + 12 + k] = Number(parts[k]);
    pos += 16;
  }
  if (opt) {
    out[pos] = 0; // root name
    out.writeUInt16BE(TYPE_OPT, pos + 1);
    out.writeUInt16BE(EDNS_PAYLOAD, pos + 3);
    out.writeUInt32BE(0, pos + 5);
    out.writeUInt16BE(0, pos + 9);
  }
  return out;
}

export class LabDnsServer {
  private readonly records = new Map<string, readonly string[]>();
  private readonly socket: dgram.Socket;
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly ttlS: number;
  private boundPort = 0;
  private closed = false;
  /** Queries answered, by normalized name (for tests and the report: how often clients re-resolved). */
  readonly queries = new Map<string, number>();

  constructor(options: DnsServerOptions = {}) {
    this.host = options.host ?? '127.0.0.1';
    if (!isIPv4(this.host)) throw new InvalidOptionError('host', 'must be an IPv4 address');
    this.requestedPort = options.port ?? 0;
    if (!Number.isInteger(this.requestedPort) || this.requestedPort < 0 || this.requestedPort > 65535) {
      throw new InvalidOptionError('port', 'must be an integer in 0..65535');
    }
    this.ttlS = options.ttlS ?? 5;
    if (!Number.isInteger(this.ttlS) || this.ttlS < 0)
      throw new InvalidOptionError('ttlS', 'must be an integer >= 0');
    this.socket = dgram.createSocket('udp4');
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    // A malformed datagram or an unreachable requester must not bring the lab down.
    this.socket.on('error', () => {});
  }

  /** Start answering; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number }> {
    if (this.closed) return Promise.reject(new GrpcKubeError('GK_ERR_DESTROYED', 'LabDnsServer is closed'));
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void =>
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `DNS server cannot bind ${this.host}:${this.requestedPort}: ${err.message}`,
            { cause: err },
          ),
        );
      this.socket.once('error', onError);
      this.socket.bind(this.requestedPort, this.host, () => {
        this.socket.off('error', onError);
        this.boundPort = this.socket.address().port;
        resolve({ host: this.host, port: this.boundPort });
      });
    });
  }

  get port(): number {
    return this.boundPort;
  }

  /** `host:port` to hand to grpc-js as the target's authority. */
  get address(): string {
    return `${this.host}:${this.boundPort}`;
  }

  /** Set the A records of `name` (an empty list keeps the name known: NOERROR with no answer). */
  setRecords(name: string, ips: readonly string[]): void {
    for (const ip of ips)
      if (!isIPv4(ip)) throw new InvalidOptionError('ips', `"${ip}" is not an IPv4 address`);
    this.records.set(normalizeName(name), Object.freeze([...ips]));
  }

  /** The A records `name` answers now (empty when unknown or empty). */
  answers(name: string): readonly string[] {
    return this.records.get(normalizeName(name)) ?? [];
  }

  /** Forget `name`: it answers NXDOMAIN again. */
  deleteRecords(name: string): void {
    this.records.delete(normalizeName(name));
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve(); // never bound
      }
    });
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed || msg.length < 12) return;
    if ((msg.readUInt16BE(2) & 0x8000) !== 0) return; // a response, not a query
    let response: Buffer;
    const opcode = (msg.readUInt16BE(2) >> 11) & 0xf;
    let q: Question | null = null;
    try {
      q = parseQuery(msg);
    } catch {
      response = buildResponse(msg, null, RCODE_FORMERR, [], this.ttlS);
      this.socket.send(response, rinfo.port, rinfo.address);
      return;
    }
    this.queries.set(q.name, (this.queries.get(q.name) ?? 0) + 1);
    if (opcode !== 0) {
      response = buildResponse(msg, q, RCODE_NOTIMP, [], this.ttlS);
    } else {
      const ips = this.records.get(q.name);
      if (ips === undefined) response = buildResponse(msg, q, RCODE_NXDOMAIN, [], this.ttlS);
      else if (q.type === TYPE_A && q.cls === CLASS_IN)
        response = buildResponse(msg, q, RCODE_NOERROR, ips, this.ttlS);
      else response = buildResponse(msg, q, RCODE_NOERROR, [], this.ttlS);
    }
    this.socket.send(response, rinfo.port, rinfo.address);
  }
}

/** Environment variable grpc-js reads once, at load, to resolve `dns:` targets with c-ares. */
export const GRPC_ALTERNATIVE_RESOLVER_ENV = 'GRPC_NODE_USE_ALTERNATIVE_RESOLVER';

/**
 * The grpc-js `dns:` target that resolves `name` through the lab DNS server at `dnsAddress`
 * (`host:port`). Only works if GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true was set before grpc-js
 * loaded: otherwise grpc-js calls dns.lookup (getaddrinfo), which ignores the authority.
 */
export function dnsTarget(dnsAddress: string, name: string, port: number): string {
  return `dns://${dnsAddress}/${name}:${port}`;
}

/**
 * Whether grpc-js in this process resolves `dns:` targets with c-ares (and so honours dnsTarget()'s
 * authority). Reads grpc-js's own flag, which is fixed when its environment module first loads: set
 * GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true before anything imports @grpc/grpc-js, then ask.
 */
export function grpcUsesAlternativeResolver(): boolean {
  const env = createRequire(import.meta.url)('@grpc/grpc-js/build/src/environment') as Record<
    string,
    unknown
  >;
  return env[GRPC_ALTERNATIVE_RESOLVER_ENV] === true;
}

/**
 * The error for strategies that dial a `dns:` target when grpc-js in this process resolves without
 * c-ares (grpcUsesAlternativeResolver): its native resolver ignores the target's DNS-server
 * authority, so every RPC of theirs would fail UNAVAILABLE. Undefined when they can run.
 */
export function alternativeResolverError(strategies: readonly string[]): GrpcKubeError | undefined {
  if (strategies.length === 0 || grpcUsesAlternativeResolver()) return undefined;
  return new GrpcKubeError(
    'GK_ERR_LAB_DNS_RESOLVER',
    `${strategies.join(', ')} dial${strategies.length === 1 ? 's' : ''} a dns: target through the lab's DNS server, but grpc-js was loaded without ${GRPC_ALTERNATIVE_RESOLVER_ENV}=true and would ignore that server (every RPC UNAVAILABLE); set ${GRPC_ALTERNATIVE_RESOLVER_ENV}=true before anything imports @grpc/grpc-js (\`grpc-kube lab\` does), or run without these strategies`,
  );
}
