// A test PKI made with openssl through the lab's own PKI code (packages/lab/src/cluster/real/pki.ts): a CA, a
// serving certificate for loopback, and client certificates carrying SPIFFE URI SANs
// (`spiffe://cluster.local/ns/<ns>/sa/<sa>`), in a fresh temp dir removed after the test.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, signed } from '@grpc-kube/lab/internal/cluster/real/pki.js';

export interface TestPki {
  readonly dir: string;
  readonly ca: string;
  /** `<name>.crt` and `<name>.key` in dir. */
  cert(name: string): { certFile: string; keyFile: string };
  /** A serving certificate for 127.0.0.1 / localhost. */
  server(name: string): Promise<{ certFile: string; keyFile: string }>;
  /** A client certificate with the SPIFFE identity of ServiceAccount `sa` in `namespace`. */
  client(name: string, namespace: string, sa?: string): Promise<{ certFile: string; keyFile: string }>;
  remove(): Promise<void>;
}

const LEAF = 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n';

export async function testPki(label = 'grpc-kube-test-ca'): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-pki-'));
  await createCa(dir, label, 2);
  const cert = (name: string): { certFile: string; keyFile: string } => ({
    certFile: join(dir, `${name}.crt`),
    keyFile: join(dir, `${name}.key`),
  });
  return {
    dir,
    ca: join(dir, 'ca.crt'),
    cert,
    async server(name) {
      await signed(
        dir,
        name,
        `/CN=${name}`,
        `${LEAF}extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n`,
        2,
      );
      return cert(name);
    },
    async client(name, namespace, sa = 'default') {
      await signed(
        dir,
        name,
        `/CN=${name}`,
        `${LEAF}extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=URI:spiffe://cluster.local/ns/${namespace}/sa/${sa}\n`,
        2,
      );
      return cert(name);
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
