// One strategy's overlay in a lab run (`lab --manifests`): apply its rendered objects, watch its pods
// for containers that cannot run, wait until every Deployment is Ready, and turn the overlay client's
// TARGET into what the lab's in-process clients dial. The lab stands in for what a cluster gives a
// client pod and the lab process is not: CoreDNS (the lab's DNS server answers the Service's name)
// and kube-proxy (a ClusterIP Service is an L4 forwarder on a virtual IP, as for the clusterip
// strategy); a `kubernetes:` target is dialled as written.

import { registeredXdsAddress, registerXdsClientOnce } from '@grpc-kube/xds/internal/client-registration.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { Pod } from '../cluster/controllers/kinds.js';
import { ClusterIpForwarder } from '../lab/clusterip.js';
import type { LabCluster } from '../lab/cluster.js';
import { dnsTarget } from '../lab/dns-server.js';
import { dnsOptions } from '../lab/strategies/headless.js';
import type { LabEnv, StrategyHandle } from '../lab/strategy.js';
import { containerNames, forbiddenLine, lastLine, podFailure, type PodFailure } from './pod-failures.js';
import type { KubeObject } from './kustomize.js';
import { serviceAddress, type OverlayPlan } from './overlays.js';

/** Apply the plan's objects in order; returns one line per object the cluster does not serve. */
export async function applyOverlay(cluster: LabCluster, plan: OverlayPlan): Promise<string[]> {
  const notes: string[] = [];
  for (const obj of plan.objects) {
    const why = await cluster.apply(obj);
    if (why !== undefined) notes.push(`${obj.kind} ${obj.metadata.name} not applied: ${why}`);
  }
  return notes;
}

/**
 * Watches every pod of an overlay's namespace; the first failure (podFailure, or a 403 / Forbidden
 * in a container's log) is kept and reported once. Pods the scenario kills are expected to exit.
 */
export class OverlayWatch {
  private reason: string | undefined;
  private failing = false;
  /** Kills by the scenario, per pod. */
  private readonly kills = new Map<string, number>();
  private readonly stopWatch: () => void;
  private readonly pods = new Map<string, Pod>();
  private readonly logTimer: NodeJS.Timeout | undefined;
  private readonly waiters = new Set<(reason: string) => void>();

  constructor(
    private readonly cluster: LabCluster,
    readonly plan: OverlayPlan,
    opts: { logEveryMs: number },
  ) {
    this.stopWatch = cluster.watchPods(plan.namespace, '', (type, pod) => {
      const name = pod.metadata.name ?? '';
      if (type === 'DELETED') return void this.pods.delete(name);
      this.pods.set(name, pod);
      const why = podFailure(pod, this.kills.get(name) ?? 0);
      if (why !== undefined && !this.failing) void this.failWithLog(name, why);
    });
    this.logTimer = setInterval(() => void this.readLogs(), opts.logEveryMs);
    this.logTimer.unref();
  }

  /** The scenario killed this pod: its container's exit is no failure. */
  expectExit(pod: string): void {
    this.kills.set(pod, (this.kills.get(pod) ?? 0) + 1);
  }

  failure(): string | undefined {
    return this.reason;
  }

  /** Rejects with the failure as soon as there is one (for racing a wait). */
  failed(): Promise<never> {
    return new Promise((_, reject) => {
      const r = (reason: string): void => reject(failureError(this.plan, reason));
      if (this.reason !== undefined) r(this.reason);
      else this.waiters.add(r);
    });
  }

  /**
   * The last `n` log lines of every container of the overlay's helper pods (not its servers): what
   * to read when a strategy's RPCs failed while every container ran.
   */
  async helperLogs(n: number): Promise<string[]> {
    const out: string[] = [];
    const servers = Object.entries(this.plan.serverSelector);
    for (const pod of this.pods.values()) {
      const labels = pod.metadata.labels ?? {};
      if (servers.every(([k, v]) => labels[k] === v)) continue;
      for (const container of containerNames(pod)) {
        const log = await this.cluster
          .containerLog(this.plan.namespace, pod.metadata.name ?? '', container)
          .catch(() => undefined);
        for (const line of (log ?? '')
          .split('\n')
          .filter((l) => l.trim() !== '')
          .slice(-n))
          out.push(`pod ${pod.metadata.name ?? ''} container ${container}: ${line.slice(0, 300)}`);
      }
    }
    return out;
  }

  stop(): void {
    this.stopWatch();
    if (this.logTimer !== undefined) clearInterval(this.logTimer);
    this.waiters.clear();
  }

  /** The container's last log line completes a reason that has none (what `kubectl logs --previous` shows). */
  private async failWithLog(pod: string, why: PodFailure): Promise<void> {
    this.failing = true;
    let reason = why.reason;
    const log = await Promise.race([
      this.cluster.containerLog(this.plan.namespace, pod, why.container).catch(() => undefined),
      new Promise<undefined>((r) => void setTimeout(r, 1000)),
    ]);
    // A container that crashed because the API refused it: the 403 is the reason to name.
    const denied = forbiddenLine(log);
    if (denied !== undefined && !reason.includes(REFUSED)) reason += `; ${REFUSED}: ${denied}`;
    else if (why.wantsLog) {
      const tail = lastLine(log);
      if (tail !== undefined) reason += `; its log ends: ${tail}`;
    }
    this.fail(reason);
  }

  private fail(reason: string): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    for (const w of this.waiters) w(reason);
    this.waiters.clear();
  }

  private async readLogs(): Promise<void> {
    for (const pod of [...this.pods.values()]) {
      for (const container of containerNames(pod)) {
        const text = await this.cluster
          .containerLog(this.plan.namespace, pod.metadata.name ?? '', container)
          .catch(() => undefined);
        const line = forbiddenLine(text);
        if (line !== undefined)
          this.fail(
            `pod ${this.plan.namespace}/${pod.metadata.name ?? ''} container ${container}: ${REFUSED}: ${line}`,
          );
      }
    }
  }
}

const REFUSED = 'the API refused it';

export function failureError(plan: OverlayPlan, reason: string): GrpcKubeError {
  return new GrpcKubeError(
    'GK_ERR_LAB_MANIFESTS',
    `${plan.overlay} (namespace ${plan.namespace}): ${reason}`,
  );
}

/** Every Deployment of the overlay Ready, or the watch's failure (a crash loop names itself). */
export async function waitOverlayReady(
  cluster: LabCluster,
  watch: OverlayWatch,
  timeoutMs: number,
): Promise<void> {
  const ready = Promise.all(
    watch.plan.deployments.map((d) =>
      cluster.waitForReadyPods(watch.plan.namespace, d.selector, d.replicas, timeoutMs),
    ),
  );
  const failed = watch.failed();
  failed.catch(() => {});
  try {
    await Promise.race([ready, failed]);
  } catch (err) {
    // A timeout while a pod is failing: the failure is the reason.
    const why = watch.failure();
    if (why !== undefined) throw failureError(watch.plan, why);
    throw err;
  }
}

/** What the lab's clients dial for this overlay: its client's TARGET, through the lab's stand-ins. */
export async function startOverlayClient(env: LabEnv, plan: OverlayPlan): Promise<StrategyHandle> {
  const c = plan.client;
  const closers: Array<() => Promise<void> | void> = [];
  const close = async (): Promise<void> => {
    for (const f of closers.reverse()) await f();
  };
  try {
    if (c.target.startsWith('kubernetes:')) {
      return { target: c.target, channelOptions: env.clientOptions(c.lbPolicy), close };
    }
    if (c.target.startsWith('dns:///')) {
      const hostPort = c.target.slice('dns:///'.length);
      const svc = serviceAddress(hostPort);
      if (svc === undefined) throw unsupported(plan, `a dns: name outside the cluster (${hostPort})`);
      const host = hostPort.slice(0, hostPort.lastIndexOf(':'));
      const addresses = await serviceAddresses(env, plan, svc, closers);
      closers.push(addresses.onChange((a) => env.dns.setRecords(host, a)));
      await waitUntil(() => env.dns.answers(host).length > 0, 10_000, `DNS records of ${host}`);
      return {
        target: dnsTarget(env.dns.address, host, svc.port),
        channelOptions: { ...dnsOptions(env), ...env.clientOptions(c.lbPolicy) },
        close,
      };
    }
    if (c.target.startsWith('xds:')) {
      const server = c.xdsServer === undefined ? undefined : serviceAddress(c.xdsServer);
      if (server === undefined)
        throw unsupported(plan, `an xDS server outside the cluster (${c.xdsServer ?? 'none'})`);
      // The process's one xDS client dials one address for good: the control plane's VIP sits there.
      const pinned = registeredXdsAddress();
      const at = pinned === undefined ? { host: env.nextVip(), port: 0 } : splitHostPort(pinned);
      const vip = await serviceAddresses(env, plan, server, closers, at);
      await registerXdsClientOnce(vip.address, `${plan.namespace}/lab-client`);
      // No service config: the xds resolver supplies its own.
      return { target: c.target, channelOptions: { 'grpc.enable_http_proxy': 0 }, close };
    }
    if (c.sidecar !== undefined && c.target.startsWith('ipv4:')) {
      const pods = await env.cluster.listPods(plan.namespace, 'app=hello-client');
      const pod = pods.find((p) => p.metadata.deletionTimestamp === undefined);
      const ip = pod?.status?.podIP;
      if (pod === undefined || ip === undefined) throw unsupported(plan, 'a client pod without an address');
      // The clients dial the sidecar: it must run (a kubelet without native sidecars leaves it out).
      const status = (
        pod.status as { initContainerStatuses?: { name: string; state?: { running?: unknown } }[] }
      ).initContainerStatuses?.find((x) => x.name === c.sidecar?.container);
      if (status?.state?.running === undefined)
        throw failureError(
          plan,
          `pod ${plan.namespace}/${pod.metadata.name ?? ''} container ${c.sidecar.container} is not running (${status === undefined ? 'the kubelet reports no status for it' : JSON.stringify(status.state)})`,
        );
      return {
        target: `ipv4:${ip}:${c.sidecar.port}`,
        channelOptions: {
          ...env.clientOptions(c.lbPolicy),
          ...(c.authority !== undefined ? { 'grpc.default_authority': c.authority } : {}),
        },
        close,
      };
    }
    throw unsupported(plan, `TARGET ${c.target}`);
  } catch (err) {
    await close();
    throw err;
  }
}

function unsupported(plan: OverlayPlan, what: string): GrpcKubeError {
  return new GrpcKubeError('GK_ERR_LAB_MANIFESTS', `${plan.overlay}: the lab cannot dial ${what}`);
}

function splitHostPort(a: string): { host: string; port: number } {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
}

interface Addresses {
  /** Where a client connects: the VIP of a ClusterIP Service, undefined for a headless one. */
  readonly address: string;
  /** Calls back with the addresses the Service's name resolves to, now and on every change. */
  onChange(f: (addresses: string[]) => void): () => void;
}

/**
 * A headless Service's name resolves to its Ready pods; any other to a virtual IP where the lab's
 * kube-proxy forwards each connection to one pod.
 */
async function serviceAddresses(
  env: LabEnv,
  plan: OverlayPlan,
  svc: { service: string; namespace: string; port: number },
  closers: Array<() => Promise<void> | void>,
  vipAt?: { host: string; port: number },
): Promise<Addresses> {
  const obj = plan.objects.find(
    (o: KubeObject) => o.kind === 'Service' && o.metadata.name === svc.service,
  ) as { spec?: { clusterIP?: string } } | undefined;
  if (obj === undefined) throw unsupported(plan, `Service ${svc.service}, which the overlay does not define`);
  const headless = obj.spec?.clusterIP === 'None';
  const fwd = headless
    ? undefined
    : new ClusterIpForwarder({
        host: vipAt?.host ?? env.nextVip(),
        port: vipAt?.port ?? svc.port,
        random: env.random,
      });
  if (fwd !== undefined) {
    await fwd.listen();
    closers.push(() => fwd.close());
  }
  let current: string[] = [];
  const listeners = new Set<(a: string[]) => void>();
  let synced: () => void = () => {};
  const first = new Promise<void>((r) => (synced = r));
  const sub = env.endpoints.subscribe(
    svc.namespace,
    svc.service,
    { kind: 'number', port: svc.port },
    {
      onEndpoints: (view) => {
        const eps = view.endpoints();
        if (fwd !== undefined) {
          fwd.setBackends(
            eps.map((e) => ({
              host: e.address,
              port: e.port,
              ready: e.state === 'ready',
              serving: e.state !== 'unready',
            })),
          );
          current = [fwd.address.slice(0, fwd.address.lastIndexOf(':'))];
        } else {
          current = eps.filter((e) => e.state === 'ready').map((e) => e.address);
        }
        for (const l of listeners) l(current);
        synced();
      },
      onError: () => {},
    },
  );
  closers.push(() => sub.unsubscribe());
  await first;
  return {
    address: fwd?.address ?? '',
    onChange: (f) => {
      listeners.add(f);
      f(current);
      return () => void listeners.delete(f);
    },
  };
}

async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new GrpcKubeError('GK_ERR_LAB', `${what}: none within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
