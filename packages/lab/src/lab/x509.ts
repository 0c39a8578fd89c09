// A certificate authority in this process, for the lab's TLS: P-256 keys from node:crypto and X.509
// v3 certificates written in DER here (node:crypto signs and parses certificates but does not build
// them). In process because the lab issues a certificate each time a pod starts, while its clients
// are measured: forking openssl three times per pod (src/cluster/real/pki.ts) stalled the clients'
// event loop for milliseconds per fork. Only what the lab needs: a self-signed CA, and leaves with
// IP, DNS and URI SANs for serverAuth and clientAuth, ECDSA with SHA-256.

import { generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import net from 'node:net';

// DER: tag, definite length, contents.
function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len =
    n < 0x80
      ? Buffer.from([n])
      : n < 0x100
        ? Buffer.from([0x81, n])
        : n < 0x10000
          ? Buffer.from([0x82, n >> 8, n & 0xff])
          : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}
const seq = (...p: Buffer[]): Buffer => der(0x30, ...p);
const set = (...p: Buffer[]): Buffer => der(0x31, ...p);
const octets = (b: Buffer): Buffer => der(0x04, b);
const bits = (b: Buffer, unused = 0): Buffer => der(0x03, Buffer.from([unused]), b);
const utf8 = (s: string): Buffer => der(0x0c, Buffer.from(s, 'utf8'));
const TRUE = Buffer.from([0x01, 0x01, 0xff]);

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [40 * (a as number) + (b as number)];
  for (const n of rest) {
    const groups = [n & 0x7f];
    for (let v = n >> 7; v > 0; v >>= 7) groups.unshift((v & 0x7f) | 0x80);
    out.push(...groups);
  }
  return der(0x06, Buffer.from(out));
}

/**
 * A non-negative INTEGER from big-endian bytes, in DER's one form: no leading zero byte (OpenSSL
 * refuses one, "illegal padding": a random serial starting 0x00 0x00-0x7f, 1 in 512, failed the lab
 * certificate it was in), and a 0x00 before a high first bit.
 */
export function integer(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return der(0x02, (v[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

function utcTime(d: Date): Buffer {
  const p = (n: number): string => String(n).padStart(2, '0');
  const s = `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  return der(0x17, Buffer.from(s, 'ascii'));
}

const commonName = (cn: string): Buffer => seq(set(seq(oid('2.5.4.3'), utf8(cn))));
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [TRUE] : []), octets(value));
}

export interface Sans {
  readonly ips?: readonly string[];
  readonly dns?: readonly string[];
  readonly uris?: readonly string[];
}

function subjectAltName(s: Sans): Buffer {
  const names: Buffer[] = [];
  for (const d of s.dns ?? []) names.push(der(0x82, Buffer.from(d, 'ascii')));
  for (const u of s.uris ?? []) names.push(der(0x86, Buffer.from(u, 'ascii')));
  for (const ip of s.ips ?? []) {
    if (!net.isIPv4(ip)) throw new RangeError(`only IPv4 SANs are made here, got "${ip}"`);
    names.push(der(0x87, Buffer.from(ip.split('.').map(Number))));
  }
  return seq(...names);
}

export interface Issued {
  /** PEM */
  readonly cert: string;
  /** PEM, PKCS#8 */
  readonly key: string;
}

export interface CertificateAuthority extends Issued {
  /** A leaf for serverAuth and clientAuth with these SANs. */
  issue(cn: string, sans: Sans): Issued;
}

function pem(label: string, body: Buffer): string {
  const b64 = body.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64.endsWith('\n') ? b64 : b64 + '\n'}-----END ${label}-----\n`;
}

function certificate(o: {
  subject: Buffer;
  issuer: Buffer;
  publicKey: KeyObject;
  signer: KeyObject;
  days: number;
  extensions: Buffer[];
}): string {
  const now = Date.now();
  const tbs = seq(
    der(0xa0, integer(Buffer.from([2]))), // v3
    integer(randomBytes(16)),
    ECDSA_SHA256,
    o.issuer,
    // An hour back: clocks of peers on this machine agree, but a little slack costs nothing.
    seq(utcTime(new Date(now - 3600_000)), utcTime(new Date(now + o.days * 86_400_000))),
    o.subject,
    o.publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, seq(...o.extensions)),
  );
  const signature = sign('sha256', tbs, o.signer); // DER ECDSA-Sig-Value for EC keys
  return pem('CERTIFICATE', seq(tbs, ECDSA_SHA256, bits(signature)));
}

function ecKeyPair(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

/** A self-signed CA valid `days` days that issues leaves valid as long. */
export function createCertificateAuthority(cn: string, days: number): CertificateAuthority {
  const ca = ecKeyPair();
  const name = commonName(cn);
  const cert = certificate({
    subject: name,
    issuer: name,
    publicKey: ca.publicKey,
    signer: ca.privateKey,
    days,
    extensions: [
      extension('2.5.29.19', true, seq(TRUE)), // basicConstraints CA:TRUE
      extension('2.5.29.15', true, bits(Buffer.from([0x06]), 1)), // keyCertSign, cRLSign
    ],
  });
  return {
    cert,
    key: ca.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    issue(leafCn, sans) {
      const leaf = ecKeyPair();
      return {
        cert: certificate({
          subject: commonName(leafCn),
          issuer: name,
          publicKey: leaf.publicKey,
          signer: ca.privateKey,
          days,
          extensions: [
            extension('2.5.29.19', true, seq()), // basicConstraints CA:FALSE
            extension('2.5.29.15', true, bits(Buffer.from([0x80]), 7)), // digitalSignature
            // extKeyUsage serverAuth, clientAuth
            extension('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2'))),
            extension('2.5.29.17', false, subjectAltName(sans)),
          ],
        }),
        key: leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      };
    },
  };
}
