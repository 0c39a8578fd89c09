// The bits of the gRPC-over-HTTP/2 wire protocol the proxy reads and writes itself
// (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md): status codes, `grpc-timeout`,
// percent-encoded `grpc-message`, trailers-only responses, and which headers are hop-by-hop. The
// proxy forwards everything else byte for byte, so it stays independent of grpc-js.

import http2 from 'node:http2';

export const GrpcStatus = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
});

const STATUS_NAMES = new Map<number, string>(Object.entries(GrpcStatus).map(([k, v]) => [v, k]));

export function statusName(code: number): string {
  return STATUS_NAMES.get(code) ?? String(code);
}

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/**
 * The longest timeout the proxy keeps: node's timers hold at most 2^31-1 ms (~24.8 days) and fire
 * at once, with a TimeoutOverflowWarning, above it. Longer `grpc-timeout`s (grpc-go encodes "no
 * deadline" as `2562047H`, its max Duration) are clamped to it, as grpc-js does for its own deadlines.
 */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * `grpc-timeout` → milliseconds, at most MAX_TIMEOUT_MS; undefined when absent or malformed
 * (ignored, as grpc-js does).
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return undefined;
  return Math.min(MAX_TIMEOUT_MS, Number(m[1]) * (UNIT_MS[m[2] as string] as number));
}

/**
 * Milliseconds → `grpc-timeout`, at most 8 digits, rounded up so the backend never gets less —
 * except that it never exceeds MAX_TIMEOUT_MS: grpc-js servers read the header into an int32 (`| 0`),
 * so `2147484S` would wrap to a negative deadline there and fail the call at once.
 */
export function formatGrpcTimeout(ms: number): string {
  const micros = Math.ceil(ms * 1000);
  if (micros < 1e8) return `${Math.max(1, micros)}u`;
  const millis = Math.ceil(ms);
  if (millis < 1e8) return `${millis}m`;
  return `${Math.min(Math.ceil(ms / 1000), Math.floor(MAX_TIMEOUT_MS / 1000))}S`;
}

/** Percent-encode a status message as the spec asks (everything outside 0x20–0x7E, and '%'). */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    if (byte >= 0x20 && byte <= 0x7e && byte !== 0x25) out += String.fromCharCode(byte);
    else out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

export function decodeGrpcMessage(value: string | string[] | undefined): string {
  if (typeof value !== 'string') return '';
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** Trailers (or trailers-only headers) carrying a status the proxy decided itself. */
export function statusTrailers(code: number, message: string): http2.OutgoingHttpHeaders {
  return { 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(message) };
}

export function trailersOnly(code: number, message: string): http2.OutgoingHttpHeaders {
  return { ':status': 200, 'content-type': 'application/grpc', ...statusTrailers(code, message) };
}

// Connection-specific headers (RFC 9113 §8.2.2) that must not cross a hop; node refuses to send them.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'host',
]);

/**
 * Copy a header block for the next hop: pseudo-headers and hop-by-hop headers dropped, `te` kept
 * only as `trailers` (the one value HTTP/2 allows), names in `drop` left out. Values are copied as
 * they are, so `-bin` metadata stays base64 and repeated keys stay joined.
 */
export function forwardHeaders(
  src: http2.IncomingHttpHeaders,
  drop: ReadonlySet<string> = EMPTY,
): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (const name of Object.keys(src)) {
    if (name.charCodeAt(0) === 0x3a /* ':' */ || HOP_BY_HOP.has(name) || drop.has(name)) continue;
    const value = src[name];
    if (value === undefined) continue;
    if (name === 'te') {
      if (value === 'trailers') out.te = 'trailers';
      continue;
    }
    out[name] = value;
  }
  return out;
}

const EMPTY: ReadonlySet<string> = new Set();

/** How gRPC maps an RST_STREAM code to a status when no trailers came (PROTOCOL-HTTP2.md). */
export function statusForRstCode(rstCode: number): number {
  const c = http2.constants;
  switch (rstCode) {
    case c.NGHTTP2_REFUSED_STREAM:
      return GrpcStatus.UNAVAILABLE;
    case c.NGHTTP2_CANCEL:
      return GrpcStatus.CANCELLED;
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case c.NGHTTP2_INADEQUATE_SECURITY:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.INTERNAL;
  }
}

export function isGrpcContentType(value: string | string[] | undefined): boolean {
  return typeof value === 'string' && /^application\/grpc(\+|;|$)/.test(value);
}
