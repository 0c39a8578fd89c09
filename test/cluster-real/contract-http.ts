// Raw HTTP against a Kubernetes API (the real one or the embedded stand-in), for recording exactly what
// the server answers — status, Status bodies, watch lines — without any client library in between; and
// the normalisation that makes two such recordings comparable (resourceVersions and timestamps vary).

import * as http from 'node:http';
import * as https from 'node:https';

export interface RawAuth {
  readonly ca?: string;
  readonly token?: string;
  readonly certPem?: string;
  readonly keyPem?: string;
}

export interface RawAnswer {
  readonly status: number;
  readonly contentType: string | undefined;
  /** Parsed JSON body, or the text when it is not JSON. */
  readonly body: unknown;
}

function open(base: string, path: string, auth: RawAuth): http.ClientRequest {
  const url = new URL(base + path);
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (auth.token !== undefined) headers['Authorization'] = `Bearer ${auth.token}`;
  const opts: https.RequestOptions = {
    method: 'GET',
    hostname: url.hostname,
    port: url.port,
    path: url.pathname + url.search,
    headers,
    ca: auth.ca,
    cert: auth.certPem,
    key: auth.keyPem,
    agent: false,
  };
  return url.protocol === 'https:' ? https.request(opts) : http.request(opts);
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** One GET, body read whole. */
export function rawGet(base: string, path: string, auth: RawAuth, timeoutMs = 10_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = open(base, path, auth);
    const timer = setTimeout(
      () => req.destroy(new Error(`GET ${path}: no answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    timer.unref();
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body: parse(body) });
      });
      res.on('error', reject);
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

export interface RawWatch {
  readonly status: number;
  readonly contentType: string | undefined;
  /** Each JSON line of the stream, parsed, in order. */
  readonly events: readonly { type: string; object: Record<string, unknown> }[];
  /** True when the server ended the stream; false when we cut it (stopWhen or the deadline). */
  readonly endedByServer: boolean;
}

/**
 * A watch read line by line until the server ends it, `stopWhen` says enough, or `timeoutMs` passes.
 * A non-2xx answer comes back with its body as the only "event".
 */
export function rawWatch(
  base: string,
  path: string,
  auth: RawAuth,
  timeoutMs: number,
  stopWhen: (events: RawWatch['events']) => boolean = () => false,
): Promise<RawWatch> {
  return new Promise((resolve, reject) => {
    const req = open(base, path, auth);
    const events: { type: string; object: Record<string, unknown> }[] = [];
    let settled = false;
    let status = 0;
    let contentType: string | undefined;
    const finish = (endedByServer: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ status, contentType, events, endedByServer });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    timer.unref();
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      contentType = res.headers['content-type'];
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === '') continue;
          events.push(JSON.parse(line) as { type: string; object: Record<string, unknown> });
          if (stopWhen(events)) return finish(false);
        }
      });
      res.on('end', () => {
        if (buf.trim() !== '') events.push({ type: 'BODY', object: parse(buf) as Record<string, unknown> });
        finish(true);
      });
      res.on('error', () => finish(false));
    });
    req.on('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

/**
 * Replaces what legitimately differs between two servers or two runs — resourceVersions, uids,
 * timestamps, the numbers inside "too old resource version: N (M)" — with placeholders, so the rest
 * can be compared field by field.
 */
export function normalise(v: unknown, key = ''): unknown {
  if (Array.isArray(v)) return v.map((x) => normalise(x));
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = normalise((v as Record<string, unknown>)[k], k);
    return out;
  }
  if (typeof v === 'string') {
    if (key === 'resourceVersion' && /^\d+$/.test(v)) return '<rv>';
    if (key === 'uid') return '<uid>';
    if (key === 'creationTimestamp' || key === 'time') return '<time>';
    return v.replace(/too old resource version: \d+ \(\d+\)/g, 'too old resource version: <rv> (<rv>)');
  }
  return v;
}
