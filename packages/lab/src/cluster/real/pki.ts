// The lab's public key infrastructure, made with the `openssl` command (node:crypto makes keys but not
// X.509 certificates): one CA that signs the apiserver's serving certificate and the admin client
// certificate, plus the ServiceAccount token signing key pair. P-256 keys keep generation instant.

import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

export interface LabPki {
  readonly caCert: string;
  readonly caKey: string;
  readonly servingCert: string;
  readonly servingKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly saKey: string;
  readonly saPub: string;
  readonly caPem: string;
  readonly adminCertPem: string;
  readonly adminKeyPem: string;
}

const OPENSSL_TIMEOUT_MS = 10_000;

function openssl(dir: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      'openssl',
      args,
      { cwd: dir, timeout: OPENSSL_TIMEOUT_MS },
      (err: (Error & { code?: unknown }) | null, _stdout: string, stderr: string) => {
        if (err === null) {
          resolve();
          return;
        }
        const hint = err.code === 'ENOENT' ? ' (openssl is not installed: apt-get install openssl)' : '';
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `openssl ${args[0] ?? ''} failed${hint}: ${stderr.trim() || err.message}`,
            { cause: err },
          ),
        );
      },
    );
  });
}

async function ecKey(dir: string, name: string): Promise<void> {
  await openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', name]);
}

/**
 * A key `name.key` and a certificate `name.crt` signed by the CA in `dir` (ca.crt, ca.key), with the
 * given subject and X.509 extensions (openssl extfile text). Also used by tests that need TLS peers.
 */
export async function signed(
  dir: string,
  name: string,
  subject: string,
  extensions: string,
  days: number,
): Promise<void> {
  await ecKey(dir, `${name}.key`);
  await openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', subject, '-out', `${name}.csr`]);
  await writeFile(join(dir, `${name}.ext`), extensions);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-set_serial',
    `0x${Math.floor(Math.random() * 0xffffffff).toString(16)}`,
    '-days',
    String(days),
    '-sha256',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.crt`,
  ]);
}

/**
 * Writes the lab's keys and certificates into `dir` (a fresh private temp dir). `serviceClusterIp` is
 * the first address of the service range: in-cluster clients reach the apiserver by it, so it belongs
 * in the serving certificate like the `kubernetes.default.svc` names.
 */
/** A self-signed CA in `dir` (ca.key, ca.crt). */
export async function createCa(dir: string, commonName: string, days: number): Promise<void> {
  await ecKey(dir, 'ca.key');
  await openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-subj',
    `/CN=${commonName}`,
    '-days',
    String(days),
    '-sha256',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
    '-out',
    'ca.crt',
  ]);
}

/** `extraIps`: more addresses the serving certificate names (the pods' way to the API, the lab gateway). */
export async function generateLabPki(
  dir: string,
  serviceClusterIp: string,
  extraIps: readonly string[] = [],
): Promise<LabPki> {
  const days = 30;
  await createCa(dir, 'grpc-kube-lab-ca', days);
  const sans = [
    'DNS:localhost',
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
    'IP:127.0.0.1',
    `IP:${serviceClusterIp}`,
    ...extraIps.map((ip) => `IP:${ip}`),
  ];
  await signed(
    dir,
    'apiserver',
    '/CN=kube-apiserver',
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
      `extendedKeyUsage=serverAuth\nsubjectAltName=${sans.join(',')}\n`,
    days,
  );
  // O=system:masters: the group the apiserver grants everything without any RBAC object.
  await signed(
    dir,
    'admin',
    '/O=system:masters/CN=grpc-kube-lab-admin',
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
      'extendedKeyUsage=clientAuth\n',
    days,
  );
  await ecKey(dir, 'sa.key');
  await openssl(dir, ['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);

  const [caPem, adminCertPem, adminKeyPem] = await Promise.all([
    readFile(join(dir, 'ca.crt'), 'utf8'),
    readFile(join(dir, 'admin.crt'), 'utf8'),
    readFile(join(dir, 'admin.key'), 'utf8'),
  ]);
  return {
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    servingCert: join(dir, 'apiserver.crt'),
    servingKey: join(dir, 'apiserver.key'),
    adminCert: join(dir, 'admin.crt'),
    adminKey: join(dir, 'admin.key'),
    saKey: join(dir, 'sa.key'),
    saPub: join(dir, 'sa.pub'),
    caPem,
    adminCertPem,
    adminKeyPem,
  };
}
