import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, integer } from '@grpc-kube/lab/internal/lab/x509.js';

// The lab's CA writes DER by hand (src/lab/x509.ts): each INTEGER must be in its one DER form, or
// OpenSSL refuses the certificate ("illegal padding") and the pod or proxy holding it cannot start.

test('integer: minimal DER, whatever the bytes (a random serial may start with zeros)', () => {
  const table: Array<[number[], number[]]> = [
    [[0x12], [0x02, 0x01, 0x12]],
    [
      [0x00, 0x12],
      [0x02, 0x01, 0x12],
    ], // a leading zero before a low byte: dropped
    [
      [0x00, 0x00, 0x7f, 0x01],
      [0x02, 0x02, 0x7f, 0x01],
    ],
    [[0x92], [0x02, 0x02, 0x00, 0x92]], // a high first bit: one zero, so it stays positive
    [
      [0x00, 0x92],
      [0x02, 0x02, 0x00, 0x92],
    ],
    [
      [0x00, 0x00, 0x92],
      [0x02, 0x02, 0x00, 0x92],
    ],
    [[0x00], [0x02, 0x01, 0x00]],
    [
      [0x00, 0x00],
      [0x02, 0x01, 0x00],
    ],
  ];
  for (const [input, want] of table)
    assert.deepEqual([...integer(Buffer.from(input))], want, `integer(${JSON.stringify(input)})`);
});

test('the lab CA issues leaves that parse and chain to it', () => {
  const ca = createCertificateAuthority('lab CA', 1);
  const caCert = new X509Certificate(ca.cert);
  for (let i = 0; i < 32; i++) {
    const leaf = new X509Certificate(ca.issue('pod', { ips: ['127.0.0.1'], dns: ['hello.lab'] }).cert);
    assert.ok(leaf.verify(caCert.publicKey));
    assert.ok(leaf.checkIP('127.0.0.1'));
    assert.match(leaf.serialNumber, /^[0-9A-F]+$/);
  }
});
