// The real Kubernetes control plane on this machine: etcd, kube-apiserver and kube-controller-manager
// built by scripts/build-control-plane.sh, started in order with a readiness check each, on free
// loopback ports, with fresh certificates in a private temp dir. stop() (and, failing that, the exit
// hooks or the next start's reaper) leaves no process and no file behind. No scheduler and no kubelet:
// the lab kubelet binds pods itself.

import { mkdirSync, rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { ETCD_VERSION, KUBE_VERSION, findControlPlaneBinaries } from './binaries.js';
import { generateLabPki, type LabPki } from './pki.js';
import {
  RunRecordFile,
  freePorts,
  onProcessExit,
  reapLeftovers,
  startProcess,
  waitHealthy,
  type ManagedProcess,
} from './processes.js';

/** The controllers the lab needs (deployments, endpoints, namespaces, ServiceAccounts and their tokens). */
export const DEFAULT_CONTROLLERS: readonly string[] = Object.freeze([
  'deployment-controller',
  'replicaset-controller',
  'endpointslice-controller',
  'serviceaccount-controller',
  'serviceaccount-token-controller',
  'garbage-collector-controller',
  'namespace-controller',
  'root-ca-certificate-publisher-controller',
]);

export interface RealControlPlaneOptions {
  /** Directory holding etcd, kube-apiserver, kube-controller-manager; default: the build script's. */
  readonly binDir?: string;
  /**
   * More IPv4 addresses kube-apiserver's serving certificate names: where pods reach the API (the lab
   * network's gateway, through the kubelet's relay), so their in-cluster config verifies it.
   */
  readonly extraServingIps?: readonly string[];
  /** IPv4 CIDR for Service ClusterIPs (data only: there is no kube-proxy). Default 10.96.0.0/16. */
  readonly serviceClusterIpRange?: string;
  /** `--controllers` of kube-controller-manager. Default DEFAULT_CONTROLLERS. */
  readonly controllers?: readonly string[];
  /** API Priority and Fairness costs CPU the lab does not need; off unless set. */
  readonly enablePriorityAndFairness?: boolean;
  readonly extraEtcdArgs?: readonly string[];
  readonly extraApiServerArgs?: readonly string[];
  readonly extraControllerManagerArgs?: readonly string[];
  /** Per component readiness deadline. Default 120 000 ms (the apiserver alone takes ~10 s on 2 cores). */
  readonly startTimeoutMs?: number;
  /** SIGTERM → SIGKILL grace per component in stop(). Default 5 000 ms. */
  readonly stopGraceMs?: number;
  /** Where run records for crash cleanup go. Default `${GRPC_KUBE_CACHE:-~/.cache/grpc-kube}/run`. */
  readonly runDir?: string;
}

export interface RealControlPlane {
  /** https://127.0.0.1:<port> */
  readonly url: string;
  readonly caPem: string;
  /** Admin (system:masters) kubeconfig, certificates inline: `new KubeConfig().loadFromString(it)`. */
  readonly adminKubeConfig: string;
  /** The same kubeconfig as a file, for `kubectl --kubeconfig` or `KUBECONFIG`. */
  readonly adminKubeConfigPath: string;
  readonly etcdUrl: string;
  /** The private temp dir (certificates, etcd data, logs); removed by stop(). */
  readonly dir: string;
  readonly logs: { readonly etcd: string; readonly apiserver: string; readonly controllerManager: string };
  readonly versions: { readonly kubernetes: string; readonly etcd: string };
  /** Paths of the PKI files, for components that need them (e.g. signing extra client certs). */
  readonly pki: LabPki;
  /** A kubeconfig (YAML) for this cluster with other credentials, e.g. a ServiceAccount token. */
  kubeConfigFor(credentials: LabCredentials, userName?: string): string;
  /**
   * Stops kube-apiserver (SIGTERM) and starts it again with the same flags on the same port; etcd and
   * its data stay. Clients see an outage, and the new apiserver's watch cache starts at etcd's current
   * revision, so a watch resumed from an older resourceVersion gets 410 Expired (as after a real
   * apiserver restart or failover). Resolves once /readyz answers again.
   */
  restartApiServer(): Promise<void>;
  /** An API outage of chosen length: stopApiServer() (SIGTERM), later startApiServer() (same flags, port). */
  stopApiServer(): Promise<void>;
  /** Starts a stopped kube-apiserver again; resolves once /readyz answers. No-op while it runs. */
  startApiServer(): Promise<void>;
  /** Stops all three (controller-manager first, etcd last) and removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

interface Settings {
  binDir: string | undefined;
  serviceClusterIpRange: string;
  firstServiceIp: string;
  controllers: readonly string[];
  enablePriorityAndFairness: boolean;
  extraEtcdArgs: readonly string[];
  extraApiServerArgs: readonly string[];
  extraControllerManagerArgs: readonly string[];
  startTimeoutMs: number;
  stopGraceMs: number;
  runDir: string;
}

function stringList(field: string, v: unknown, fallback: readonly string[]): readonly string[] {
  if (v === undefined) return fallback;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    throw new InvalidOptionError(field, 'must be an array of strings');
  }
  return Object.freeze([...(v as string[])]);
}

function positiveMs(field: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new InvalidOptionError(field, `must be a positive number of milliseconds, got ${String(v)}`);
  }
  return v;
}

/** The first usable address of an IPv4 CIDR: the apiserver gives it to the `kubernetes` Service. */
function firstIpOf(cidr: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const bits = m ? Number(m[5]) : -1;
  if (octets.length !== 4 || octets.some((o) => o > 255) || bits < 8 || bits > 30) {
    throw new InvalidOptionError(
      'serviceClusterIpRange',
      `must be an IPv4 CIDR like 10.96.0.0/16, got "${cidr}"`,
    );
  }
  const ip = octets.reduce((acc, o) => acc * 256 + o, 0);
  const mask = 2 ** 32 - 2 ** (32 - bits);
  const first = (ip & mask) >>> 0;
  const next = first + 1;
  return [24, 16, 8, 0].map((s) => Math.floor(next / 2 ** s) % 256).join('.');
}

function settingsFrom(opts: RealControlPlaneOptions): Settings {
  if (typeof opts !== 'object' || opts === null) {
    throw new InvalidOptionError('options', 'must be an object');
  }
  const range = opts.serviceClusterIpRange ?? '10.96.0.0/16';
  if (typeof range !== 'string') throw new InvalidOptionError('serviceClusterIpRange', 'must be a string');
  if (opts.binDir !== undefined && typeof opts.binDir !== 'string') {
    throw new InvalidOptionError('binDir', 'must be a string');
  }
  if (opts.runDir !== undefined && typeof opts.runDir !== 'string') {
    throw new InvalidOptionError('runDir', 'must be a string');
  }
  const cache = process.env['GRPC_KUBE_CACHE'] || join(homedir(), '.cache', 'grpc-kube');
  const controllers = stringList('controllers', opts.controllers, DEFAULT_CONTROLLERS);
  if (controllers.length === 0) throw new InvalidOptionError('controllers', 'must not be empty');
  return {
    binDir: opts.binDir,
    serviceClusterIpRange: range,
    firstServiceIp: firstIpOf(range),
    controllers,
    enablePriorityAndFairness: opts.enablePriorityAndFairness === true,
    extraEtcdArgs: stringList('extraEtcdArgs', opts.extraEtcdArgs, []),
    extraApiServerArgs: stringList('extraApiServerArgs', opts.extraApiServerArgs, []),
    extraControllerManagerArgs: stringList('extraControllerManagerArgs', opts.extraControllerManagerArgs, []),
    startTimeoutMs: positiveMs('startTimeoutMs', opts.startTimeoutMs, 120_000),
    stopGraceMs: positiveMs('stopGraceMs', opts.stopGraceMs, 5_000),
    runDir: opts.runDir ?? join(cache, 'run'),
  };
}

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64');
}

/** Credentials of one kubeconfig user: a client certificate, or a bearer token (e.g. from TokenRequest). */
export type LabCredentials =
  { readonly certPem: string; readonly keyPem: string } | { readonly token: string };

/**
 * A one-context kubeconfig for the lab cluster with everything inline, for
 * `new KubeConfig().loadFromString(yaml)`. JSON-quoted scalars keep any token or name YAML-safe.
 */
export function kubeConfigYaml(
  url: string,
  caPem: string,
  credentials: LabCredentials,
  userName = 'lab-user',
): string {
  const q = (v: string): string => JSON.stringify(v);
  const user =
    'token' in credentials
      ? [`    token: ${q(credentials.token)}`]
      : [
          `    client-certificate-data: ${b64(credentials.certPem)}`,
          `    client-key-data: ${b64(credentials.keyPem)}`,
        ];
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: grpc-kube-lab',
    '  cluster:',
    `    server: ${q(url)}`,
    `    certificate-authority-data: ${b64(caPem)}`,
    'users:',
    `- name: ${q(userName)}`,
    '  user:',
    ...user,
    'contexts:',
    '- name: grpc-kube-lab',
    '  context:',
    '    cluster: grpc-kube-lab',
    `    user: ${q(userName)}`,
    'current-context: grpc-kube-lab',
    '',
  ].join('\n');
}

/**
 * Starts etcd, kube-apiserver and kube-controller-manager and resolves once all three are healthy.
 * Throws GK_ERR_LAB (with the failing component's log tail) if a binary is missing or a component does
 * not come up; in that case everything already started has been stopped and removed.
 */
export async function startRealControlPlane(opts: RealControlPlaneOptions = {}): Promise<RealControlPlane> {
  const s = settingsFrom(opts);
  const bins = findControlPlaneBinaries(s.binDir);

  mkdirSync(s.runDir, { recursive: true });
  reapLeftovers(s.runDir);

  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-cp-'));
  const record = new RunRecordFile(s.runDir, dir);
  const procs: ManagedProcess[] = [];
  const unregisterExitHook = onProcessExit(() => {
    for (const p of procs) p.killNow();
    rmSync(dir, { recursive: true, force: true });
    record.remove();
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // Reverse start order: controllers first, so nothing logs errors about a vanished apiserver.
      for (const p of [...procs].reverse()) await p.stop(s.stopGraceMs);
      rmSync(dir, { recursive: true, force: true });
      record.remove();
      unregisterExitHook();
    })();
    return stopping;
  };
  const start = (name: string, exe: string, args: string[]): ManagedProcess => {
    const p = startProcess(name, exe, args, join(dir, `${name}.log`));
    procs.push(p);
    record.addChild(p.pid, exe);
    return p;
  };

  try {
    const pki = await generateLabPki(dir, s.firstServiceIp, opts.extraServingIps ?? []);
    const [etcdClientPort, etcdPeerPort, apiPort, kcmPort] = (await freePorts(4)) as [
      number,
      number,
      number,
      number,
    ];
    const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    const etcd = start('etcd', bins.etcd, [
      '--name=lab',
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=lab=${peerUrl}`,
      '--initial-cluster-state=new',
      // The lab's data is disposable; fsync on every write would make each API call wait on the disk.
      '--unsafe-no-fsync',
      ...s.extraEtcdArgs,
    ]);
    await waitHealthy(etcd, { url: `${etcdUrl}/health` }, s.startTimeoutMs);

    const url = `https://127.0.0.1:${apiPort}`;
    const adminKubeConfig = kubeConfigYaml(
      url,
      pki.caPem,
      { certPem: pki.adminCertPem, keyPem: pki.adminKeyPem },
      'lab-admin',
    );
    const adminKubeConfigPath = join(dir, 'admin.kubeconfig');
    await writeFile(adminKubeConfigPath, adminKubeConfig, { mode: 0o600 });

    const apiserverArgs = [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      `--tls-cert-file=${pki.servingCert}`,
      `--tls-private-key-file=${pki.servingKey}`,
      `--client-ca-file=${pki.caCert}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      `--service-cluster-ip-range=${s.serviceClusterIpRange}`,
      '--authorization-mode=Node,RBAC',
      '--allow-privileged=true',
      // The advertise address is loopback, which the apiserver itself would refuse as an endpoint of
      // the `kubernetes` Service; nothing in the lab dials that Service, so do not reconcile it.
      '--endpoint-reconciler-type=none',
      `--enable-priority-and-fairness=${s.enablePriorityAndFairness}`,
      '--profiling=false',
      `--cert-dir=${join(dir, 'apiserver-certs')}`,
      ...s.extraApiServerArgs,
    ];
    let apiserver = start('kube-apiserver', bins.kubeApiserver, apiserverArgs);
    const adminTls = { ca: pki.caPem, cert: pki.adminCertPem, key: pki.adminKeyPem };
    await waitHealthy(apiserver, { url: `${url}/readyz`, tls: adminTls }, s.startTimeoutMs);
    // One apiserver lifecycle change at a time: stop, start and restart queue behind each other.
    let lifecycle: Promise<void> = Promise.resolve();
    const queued = (fn: () => Promise<void>): Promise<void> => {
      if (stopping)
        return Promise.reject(new GrpcKubeError('GK_ERR_DESTROYED', 'the control plane was stopped'));
      const next = lifecycle.then(fn);
      lifecycle = next.catch(() => undefined);
      return next;
    };
    const stopApiServerNow = async (): Promise<void> => {
      await apiserver.stop(s.stopGraceMs);
    };
    const startApiServerNow = async (): Promise<void> => {
      if (!apiserver.hasExited()) return;
      const old = apiserver;
      const at = procs.indexOf(old);
      const next = startProcess(old.name, old.exe, apiserverArgs, old.logFile);
      // Same place in the stop order: after the controller-manager, before etcd.
      if (at >= 0) procs[at] = next;
      else procs.push(next);
      record.addChild(next.pid, next.exe);
      apiserver = next;
      await waitHealthy(next, { url: `${url}/readyz`, tls: adminTls }, s.startTimeoutMs);
    };
    const restartApiServer = (): Promise<void> =>
      queued(async () => {
        await stopApiServerNow();
        await startApiServerNow();
      });
    const stopApiServer = (): Promise<void> => queued(stopApiServerNow);
    const startApiServer = (): Promise<void> => queued(startApiServerNow);

    const kcm = start('kube-controller-manager', bins.kubeControllerManager, [
      `--kubeconfig=${adminKubeConfigPath}`,
      `--authentication-kubeconfig=${adminKubeConfigPath}`,
      `--authorization-kubeconfig=${adminKubeConfigPath}`,
      // The apiserver has no front-proxy (requestheader) CA; without this the controller-manager
      // looks for one in kube-system and logs an error every few hundred ms.
      '--authentication-skip-lookup=true',
      '--bind-address=127.0.0.1',
      `--secure-port=${kcmPort}`,
      `--cert-dir=${join(dir, 'kcm-certs')}`,
      '--leader-elect=false',
      `--service-account-private-key-file=${pki.saKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--controllers=${s.controllers.join(',')}`,
      '--use-service-account-credentials=false',
      // Defaults (20 qps) throttle a lab that creates dozens of pods at once.
      '--kube-api-qps=200',
      '--kube-api-burst=400',
      ...s.extraControllerManagerArgs,
    ]);
    // Its serving cert is self-signed in --cert-dir; /healthz is on the always-allowed path list.
    await waitHealthy(
      kcm,
      { url: `https://127.0.0.1:${kcmPort}/healthz`, tls: { insecure: true } },
      s.startTimeoutMs,
    );

    return Object.freeze({
      url,
      caPem: pki.caPem,
      adminKubeConfig,
      adminKubeConfigPath,
      etcdUrl,
      dir,
      logs: Object.freeze({
        etcd: etcd.logFile,
        apiserver: apiserver.logFile,
        controllerManager: kcm.logFile,
      }),
      versions: Object.freeze({ kubernetes: KUBE_VERSION, etcd: ETCD_VERSION }),
      pki,
      kubeConfigFor: (credentials: LabCredentials, userName?: string) =>
        kubeConfigYaml(url, pki.caPem, credentials, userName),
      restartApiServer,
      stopApiServer,
      startApiServer,
      stop,
    });
  } catch (err) {
    await stop();
    if (err instanceof GrpcKubeError) throw err;
    throw new GrpcKubeError('GK_ERR_LAB', `could not start the real control plane: ${String(err)}`, {
      cause: err,
    });
  }
}
