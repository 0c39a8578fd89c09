// The lab runner: one scenario, every selected strategy side by side. A fresh embedded cluster per
// scenario runs the Hello Deployments (a plain one, and one with max connection age for the strategy
// that needs it); each strategy drives its own clients against the same pods at the same time, so
// every strategy sees exactly the same scale-up, rollout, kill or outage. The scenario's steps act on
// the cluster at their times; pod lives and every RPC are recorded on one clock, then measured.

import { deploymentManifest, type AppSpec } from '../cluster/embedded.js';
import type { Service } from '../cluster/controllers/kinds.js';
import { startLabCluster, type LabCluster } from './cluster.js';
import { LAB_DEFAULTS, type LabConfig, type PodShutdown } from './config.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';
import { canaryGrpcRoute } from './strategies/xds.js';
import { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { setup as setupResolvers, type GrpcKube } from 'grpc-kube/internal/resolver/setup.js';
import { registerPolicies } from 'grpc-kube/internal/balancer/index.js';
import { clientDefaults } from 'grpc-kube/internal/client/defaults.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { alternativeResolverError, LabDnsServer } from './dns-server.js';
import {
  computeRunRecord,
  distinctPodsPerClient,
  endpointSeries,
  podRateSeries,
  policyOf,
  type LabRunRecord,
} from './metrics.js';
import { GaugeSampler } from './gauge-sampler.js';
import type { ReportRun, ScenarioEvent } from './report.js';
import type { PodSignal, Scenario, ScenarioStep } from './scenario.js';
import { StepScheduler, type StepContext } from './step-scheduler.js';
import { blackholeFigures, keepaliveWindowMs, watchUnready } from './blackhole.js';
import { canaryFigures, canaryLine, canaryVerdict, weightPhases } from './canary.js';
import { MAX_CONNECTION_AGE_GRACE_MS, MAX_CONNECTION_AGE_MS } from './strategies/headless.js';
import type { AppFlavour, LabEnv, LabStrategy, StrategyHandle } from './strategy.js';
import { PodTimelineRecorder } from './timeline.js';
import { HarnessMonitor, harnessVerdict, raiseLabPriority } from './harness.js';
import { idleAllowanceMs, longestIdle, startWorkload, type WorkloadRun } from './workload.js';
import { createLabTls, LAB_TLS_DNS_ENV, serviceDnsNames } from './tls.js';
import { readReceivedCounts } from './hello.js';
import { COUNT_FLUSH_MS } from './pod-main.js';
import { mkdtemp, rm } from 'node:fs/promises';
import {
  CANARY_DEPLOYMENT,
  planOverlay,
  serviceAccountRules,
  type OverlayPlan,
} from '../manifests/overlays.js';
import {
  applyOverlay,
  failureError,
  OverlayWatch,
  startOverlayClient,
  waitOverlayReady,
} from '../manifests/run.js';
import { packageRoot } from './paths.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const LAB_NAMESPACE = 'lab';
export const LAB_PORT = 50051;
/** With --tls: the pods' plaintext grpc.health.v1 port, where the kubelet's probe reads them. */
export const LAB_PROBE_PORT = 50052;

export interface RunOptions {
  readonly scenario: Scenario;
  readonly strategies: readonly LabStrategy[];
  /** 1 for the real timings; --quick uses less (scenario times are already scaled by the caller). */
  readonly timeScale: number;
  readonly random: () => number;
  /** The validated run options (labConfig): read as they are, no defaults here. */
  readonly config: LabConfig;
  readonly onProgress?: (line: string) => void;
  /** `--manifests`: the directory holding deploy/ (default: this checkout's root). */
  readonly manifestsRoot?: string;
}

export interface ScenarioResult {
  readonly scenario: string;
  readonly runs: ReportRun[];
  readonly skipped: readonly { strategy: string; why: string }[];
  /** Strategies that threw while starting: they ran no clients; the others' runs are kept. */
  readonly failed: readonly { strategy: string; reason: string }[];
  /** Runs whose workload did not cover the scenario's duration (incompleteRun): their figures are partial. */
  readonly incomplete: readonly IncompleteRun[];
}

/** A run whose workload started no RPC for longer than a running one can (its figures cover less than the scenario). */
export interface IncompleteRun {
  readonly strategy: string;
  /** The longest stretch without an RPC start, ms from the clients' start. */
  readonly idleFromMs: number;
  readonly idleToMs: number;
  readonly durationMs: number;
  readonly rpcs: number;
  /** Why and when the workload stopped starting RPCs. */
  readonly ended: { readonly by: string; readonly atMs: number } | null;
  /** The whole sentence, as the progress and the CLI print it. */
  readonly reason: string;
}

/**
 * Whether a workload covered its run: undefined if every stretch without an RPC start was within
 * what a running workload can take (idleAllowanceMs), else the longest one, said in a sentence.
 */
export function incompleteRun(o: {
  strategy: string;
  tMs: ArrayLike<number>;
  durationMs: number;
  deadlineMs: number;
  pacingMs: number;
  failurePauseMs: number;
  loopDelayMsMax: number;
  ended: { by: string; atMs: number } | undefined;
}): IncompleteRun | undefined {
  const idle = longestIdle(o.tMs, o.durationMs);
  const allowed = idleAllowanceMs(o);
  if (idle.toMs - idle.fromMs <= allowed) return undefined;
  const s = (ms: number): string => (ms / 1000).toFixed(1);
  const end = o.ended === undefined ? 'it never stopped' : `stopped by ${o.ended.by} at ${s(o.ended.atMs)} s`;
  const late = `client event loop late by up to ${Math.round(o.loopDelayMsMax)} ms`;
  return {
    strategy: o.strategy,
    idleFromMs: Math.round(idle.fromMs),
    idleToMs: Math.round(idle.toMs),
    durationMs: o.durationMs,
    rpcs: o.tMs.length,
    ended: o.ended ?? null,
    reason: `its workload started no RPC from ${s(idle.fromMs)} to ${s(idle.toMs)} s of the ${s(o.durationMs)} s run (${o.tMs.length} RPCs; a running one waits at most ${Math.round(allowed)} ms; ${end}; ${late}): its figures cover less than the scenario`,
  };
}

/** A failure as one line: the typed code when there is one, and the message. */
export function failureReason(err: unknown): string {
  if (err instanceof GrpcKubeError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

const PROBE_PERIOD_MS = 100;
export { POD_NICE, POD_SHUTDOWNS, type PodShutdown } from './config.js';
const KIT_PROPAGATION_DELAY_MS = 1000;

function podEnv(o: {
  delayMs: number;
  maxAge: boolean;
  pods: PodShutdown;
  timeScale: number;
  countDir: string | undefined;
  pushbackMs: number | undefined;
}): Record<string, string> {
  const env: Record<string, string> = {
    ...(o.pushbackMs !== undefined ? { HELLO_OVERLOAD_PUSHBACK_MS: String(o.pushbackMs) } : {}),
    ...(o.countDir !== undefined ? { HELLO_COUNT_DIR: o.countDir } : {}),
    HELLO_RESPONSE_DELAY_MS: String(o.delayMs),
    HELLO_SHUTDOWN: o.pods === 'naive' ? 'immediate' : 'graceful',
    HELLO_DRAIN_DELAY_MS: String(o.pods === 'kit' ? Math.round(KIT_PROPAGATION_DELAY_MS * o.timeScale) : 0),
    HELLO_GRACE_MS: '4000',
    HELLO_MAX_LIFETIME_MS: String(10 * 60_000),
  };
  if (o.maxAge) {
    env.HELLO_MAX_CONNECTION_AGE_MS = String(Math.round(MAX_CONNECTION_AGE_MS * o.timeScale));
    env.HELLO_MAX_CONNECTION_AGE_GRACE_MS = String(Math.round(MAX_CONNECTION_AGE_GRACE_MS * o.timeScale));
  }
  return env;
}

interface AppDeployments {
  /** The flavour, or with --manifests the strategy whose overlay these Deployments are. */
  readonly key: string;
  readonly namespace: string;
  /** Label selector of the Service's pods. */
  readonly selector: string;
  readonly service: string;
  /** Deployments behind the Service that scenario steps act on (the slow one is left alone). */
  readonly deployments: string[];
}

/** Deployments and a headless Service selecting them by `svc=<service>`. */
async function applyApps(
  cluster: LabCluster,
  scenario: Scenario,
  flavours: AppFlavour[],
  opts: RunOptions,
  countDir: string | undefined,
): Promise<AppDeployments[]> {
  const out: AppDeployments[] = [];
  for (const flavour of flavours) {
    const service = flavour === 'plain' ? 'hello' : 'hello-maxage';
    const slow = scenario.slowPod !== undefined;
    const base = scenario.responseDelayMs ?? 0;
    // With TLS every pod's certificate carries its clients' authority, its Service's names (the
    // canary's pods carry `hello`'s: their clients dial `hello`).
    const tlsEnv = (): Record<string, string> =>
      opts.config.tls
        ? {
            HELLO_HEALTH_PORT: String(LAB_PROBE_PORT),
            [LAB_TLS_DNS_ENV]: serviceDnsNames(service, LAB_NAMESPACE).join(','),
          }
        : {};
    const app = (name: string, replicas: number, delayMs: number): AppSpec => ({
      name,
      namespace: LAB_NAMESPACE,
      replicas,
      port: LAB_PORT,
      env: {
        ...podEnv({
          delayMs,
          maxAge: flavour === 'maxage',
          pods: opts.config.pods,
          timeScale: opts.timeScale,
          countDir,
          pushbackMs: scenario.overloadPushbackMs,
        }),
        ...tlsEnv(),
      },
      maxSurge: scenario.maxSurge,
      maxUnavailable: scenario.maxUnavailable,
      terminationGracePeriodSeconds: 5,
      probe: {
        periodMs: PROBE_PERIOD_MS,
        failureThreshold: 1,
        ...(opts.config.tls ? { port: LAB_PROBE_PORT } : {}),
      },
      labels: { svc: service },
    });
    const main = app(service, slow ? scenario.replicas - 1 : scenario.replicas, base);
    const deployments = [main];
    if (slow)
      deployments.push(
        app(`${service}-slow`, 1, Math.round(Math.max(base, 1) * (scenario.slowPod?.factor ?? 1))),
      );
    for (const d of deployments) await cluster.create('deployments', deploymentManifest(d));
    const svc: Service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: service, namespace: LAB_NAMESPACE },
      spec: {
        clusterIP: 'None',
        type: 'ClusterIP',
        selector: { svc: service },
        ports: [{ name: 'grpc', port: LAB_PORT, targetPort: LAB_PORT, protocol: 'TCP' }],
      },
    };
    await cluster.create('services', svc);
    if (flavour === 'plain' && scenario.canaryReplicas !== undefined) {
      // The canary: its own Deployment and Service; a GRPCRoute on `hello` splits traffic between them.
      const canary = `${service}-canary`;
      await cluster.create(
        'deployments',
        deploymentManifest({ ...app(canary, scenario.canaryReplicas, base), labels: { svc: canary } }),
      );
      await cluster.create('services', {
        ...svc,
        metadata: { name: canary, namespace: LAB_NAMESPACE },
        spec: { ...svc.spec, selector: { svc: canary } },
      });
    }
    out.push({
      key: flavour,
      namespace: LAB_NAMESPACE,
      selector: `svc=${service}`,
      service,
      deployments: [service],
    });
  }
  return out;
}

function stepLabel(s: ScenarioStep): string {
  switch (s.action) {
    case 'scale':
      return `scale to ${s.replicas}`;
    case 'rollout':
      return 'rolling update';
    case 'kill-pods':
      return `${s.signal} ${s.count} pod${s.count > 1 ? 's' : ''}`;
    case 'api-down':
      return `API down ${Math.round(s.forMs / 1000)} s`;
    case 'set-weights':
      return `weights ${s.weights.stable}/${s.weights.canary}`;
  }
}

export async function runScenario(opts: RunOptions): Promise<ScenarioResult> {
  const { scenario } = opts;
  const progress = opts.onProgress ?? (() => {});
  const skipped: { strategy: string; why: string }[] = [];
  const isCanary = scenario.steps.some((s) => s.action === 'set-weights');
  const userPods = opts.config.podCommand !== undefined;
  const strategies = opts.strategies.filter((s) => {
    if (isCanary && !s.canRoute) {
      skipped.push({ strategy: s.name, why: 'cannot route by weight' });
      return false;
    }
    if (userPods && s.hidesPod) {
      skipped.push({
        strategy: s.name,
        why: 'with --pod-command, a hop of the lab hides which pod answered',
      });
      return false;
    }
    if (userPods && s.flavour === 'maxage') {
      skipped.push({ strategy: s.name, why: "needs the lab's Hello server to set a max connection age" });
      return false;
    }
    if (opts.config.tls && s.noTls !== undefined) {
      skipped.push({ strategy: s.name, why: `no TLS: ${s.noTls}` });
      return false;
    }
    if (userPods && scenario.slowPod !== undefined) {
      skipped.push({ strategy: s.name, why: "the slow pod is the lab's Hello server with a delay" });
      return false;
    }
    return true;
  });
  // --manifests: each strategy's overlay, rendered now; one that has none fails alone.
  const manifests = opts.config.manifests;
  const plans = new Map<LabStrategy, OverlayPlan>();
  const failedEarly: Array<{ strategy: string; reason: string }> = [];
  if (manifests) {
    for (const s of [...strategies]) {
      try {
        plans.set(
          s,
          planOverlay({
            root: opts.manifestsRoot ?? packageRoot(),
            strategy: s.name,
            canary: isCanary,
            sharedNetwork: opts.config.cluster === 'embedded',
            replicas: scenario.replicas,
            ...(scenario.canaryReplicas !== undefined ? { canaryReplicas: scenario.canaryReplicas } : {}),
            ...(scenario.maxSurge !== undefined ? { maxSurge: scenario.maxSurge } : {}),
            ...(scenario.maxUnavailable !== undefined ? { maxUnavailable: scenario.maxUnavailable } : {}),
          }),
        );
      } catch (err) {
        failedEarly.push({ strategy: s.name, reason: failureReason(err) });
        progress(`  ${scenario.name}: ${s.name} FAILED: ${failureReason(err)}`);
        strategies.splice(strategies.indexOf(s), 1);
      }
    }
  }
  // A dns: target needs grpc-js's c-ares resolver: without it each such strategy fails alone, by name.
  const dnsError = alternativeResolverError(
    strategies.filter((s) => dialsDns(s, plans.get(s))).map((s) => s.name),
  );
  if (dnsError !== undefined) {
    for (const s of strategies.filter((x) => dialsDns(x, plans.get(x)))) {
      failedEarly.push({ strategy: s.name, reason: failureReason(dnsError) });
      strategies.splice(strategies.indexOf(s), 1);
    }
    progress(`  ${scenario.name}: FAILED: ${failureReason(dnsError)}`);
  }
  if (strategies.length === 0)
    return { scenario: scenario.name, runs: [], skipped, failed: failedEarly, incomplete: [] };

  if (opts.config.tls && userPods)
    throw new InvalidOptionError('--tls', "runs the lab's Hello pods only (not --pod-command)");
  let vip = 0;
  // A CA for this run only; its files go with the run.
  const tls = opts.config.tls ? await createLabTls(LAB_NAMESPACE) : undefined;
  // Before anything starts: pods and proxies inherit the lab's niceness.
  const restorePriority = raiseLabPriority();
  let cluster: LabCluster;
  try {
    cluster = await startLabCluster(opts.config.cluster, {
      namespace: LAB_NAMESPACE,
      extraNamespaces: [...plans.values()].map((p) => p.namespace),
      images: manifests,
      ...(manifests
        ? { serviceAccountRules: serviceAccountRules([...plans.values()].flatMap((p) => [...p.objects])) }
        : {}),
      probePeriodMs: PROBE_PERIOD_MS,
      random: opts.random,
      podNice: opts.config.podNice,
      ...(opts.config.podCommand !== undefined ? { podCommand: opts.config.podCommand } : {}),
      ...(tls !== undefined ? { tls } : {}),
    });
  } catch (err) {
    restorePriority();
    await tls?.remove();
    throw err;
  }
  const cleanups: Array<() => Promise<void> | void> = [
    () => tls?.remove(),
    restorePriority,
    () => cluster.stop(),
  ];
  try {
    const flavours = manifests ? [] : [...new Set(strategies.map((s) => s.flavour))];
    // The lab's Hello pods count the requests they receive per client (the workload's clients are
    // `<strategy>-<i>`): every retry and hedge is one more, which the clients' record cannot show.
    const countDir =
      userPods || manifests ? undefined : await mkdtemp(join(tmpdir(), 'grpc-kube-lab-counts-'));
    if (countDir !== undefined) cleanups.push(() => rm(countDir, { recursive: true, force: true }));
    const apps = await applyApps(cluster, scenario, flavours, opts, countDir);
    const readyTimeoutMs = 30_000;
    for (const a of apps) {
      await cluster.waitForReadyPods(LAB_NAMESPACE, { svc: a.service }, scenario.replicas, readyTimeoutMs);
    }
    // --manifests: every overlay applied as rendered, watched, and Ready before the clients start;
    // an overlay that cannot come up fails its strategy alone.
    const watches = new Map<LabStrategy, OverlayWatch>();
    for (const [s, plan] of plans) {
      const watch = new OverlayWatch(cluster, plan, { logEveryMs: 2000 });
      cleanups.push(() => watch.stop());
      try {
        for (const note of await applyOverlay(cluster, plan)) progress(`  ${s.name}: ${note}`);
        for (const a of plan.adaptations) progress(`  ${s.name}: ${plan.overlay}: ${a}`);
        await waitOverlayReady(cluster, watch, readyTimeoutMs * 2);
      } catch (err) {
        failedEarly.push({ strategy: s.name, reason: failureReason(err) });
        progress(`  ${scenario.name}: ${s.name} FAILED: ${failureReason(err)}`);
        watch.stop();
        continue;
      }
      watches.set(s, watch);
      apps.push({
        key: s.name,
        namespace: plan.namespace,
        selector: Object.entries(plan.serverSelector)
          .map(([k, v]) => `${k}=${v}`)
          .join(','),
        service: 'hello',
        deployments: [...plan.serverDeployments],
      });
    }
    if (manifests) strategies.splice(0, strategies.length, ...strategies.filter((s) => watches.has(s)));
    if (!manifests && scenario.canaryReplicas !== undefined) {
      await cluster.waitForReadyPods(
        LAB_NAMESPACE,
        { svc: 'hello-canary' },
        scenario.canaryReplicas,
        readyTimeoutMs,
      );
    }

    const dns = new LabDnsServer({ host: '127.0.0.1', port: 0, ttlS: 5 });
    await dns.listen();
    cleanups.push(() => dns.close());
    const kubeConfigYaml = cluster.kubeConfigYaml;
    const endpoints = new SourceRegistry(KubeClient.fromKubeConfigString(kubeConfigYaml), {
      backoff: { initialMs: 200, maxMs: 5000 },
    });
    cleanups.push(() => endpoints.close());
    const dnsName = (svc: string): string => `${svc}.${LAB_NAMESPACE}.svc.cluster.local`;
    // CoreDNS stand-in: A records = ready endpoints of each headless Service (an overlay's client
    // sets up its own, startOverlayClient).
    const labApps = apps.filter((a) => a.namespace === LAB_NAMESPACE);
    for (const a of labApps) {
      const sub = endpoints.subscribe(
        LAB_NAMESPACE,
        a.service,
        { kind: 'number', port: LAB_PORT },
        {
          onEndpoints: (view) =>
            dns.setRecords(
              dnsName(a.service),
              view
                .endpoints()
                .filter((e) => e.state === 'ready')
                .map((e) => e.address),
            ),
          onError: () => {},
        },
      );
      cleanups.push(() => sub.unsubscribe());
    }
    const gk: GrpcKube = setupResolvers({
      kubeConfig: kubeConfigYaml,
      source: { backoff: { initialMs: 200, maxMs: 5000 } },
    });
    cleanups.push(() => gk.close());
    registerPolicies();

    const appOf = (f: AppFlavour) => ({
      service: f === 'plain' ? 'hello' : 'hello-maxage',
      dnsName: dnsName(f === 'plain' ? 'hello' : 'hello-maxage'),
    });
    const env: LabEnv = {
      cluster,
      namespace: LAB_NAMESPACE,
      port: LAB_PORT,
      apps: { plain: appOf('plain'), maxage: appOf('maxage') },
      dns,
      kubeConfigYaml,
      endpoints,
      random: opts.random,
      nextVip: () => `${cluster.loopbackPrefix}.1.${++vip}`,
      timeScale: opts.timeScale,
      tls,
      clientOptions: (policy) =>
        opts.config.clientDefaults
          ? clientDefaults({
              lbPolicy: policy,
              ...(opts.config.idempotent || opts.config.hedgeMs !== undefined
                ? { idempotentMethods: [{ service: 'hello.Greeter' }] }
                : {}),
              ...(opts.config.hedgeMs !== undefined ? { hedging: { delayMs: opts.config.hedgeMs } } : {}),
            })
          : { 'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ [policy]: {} }] }) },
      log: progress,
    };
    // Every stand-in must have its first answer before clients dial.
    await waitFor(
      () => labApps.every((a) => dns.answers(dnsName(a.service)).length >= scenario.replicas),
      10_000,
    );

    // A strategy that cannot start fails alone: the others run the scenario as planned.
    const handles: Array<{ s: LabStrategy; h: StrategyHandle }> = [];
    const failed: Array<{ strategy: string; reason: string }> = [...failedEarly];
    for (const s of strategies) {
      let h: StrategyHandle;
      try {
        const plan = plans.get(s);
        h = plan !== undefined ? await startOverlayClient(env, plan) : await s.start(env);
      } catch (err) {
        failed.push({ strategy: s.name, reason: failureReason(err) });
        progress(`  ${scenario.name}: ${s.name} FAILED to start: ${failureReason(err)}`);
        continue;
      }
      cleanups.push(() => h.close());
      // A strategy that did not say it dials dns: (dialsDns) is held to its target.
      const resolverError = h.target.startsWith('dns:') ? alternativeResolverError([s.name]) : undefined;
      if (resolverError !== undefined) {
        failed.push({ strategy: s.name, reason: failureReason(resolverError) });
        progress(`  ${scenario.name}: ${s.name} FAILED to start: ${failureReason(resolverError)}`);
        continue;
      }
      handles.push({ s, h });
    }
    if (handles.length === 0) return { scenario: scenario.name, runs: [], skipped, failed, incomplete: [] };

    const recorders = new Map<string, PodTimelineRecorder>();
    const clock = (): number => performance.now();
    for (const a of apps) {
      // The canary's pods serve the same clients: they belong on the same plots.
      const selector =
        a.key === 'plain' && scenario.canaryReplicas !== undefined
          ? `svc in (${a.service},${a.service}-canary)`
          : a.selector;
      const r = new PodTimelineRecorder(cluster, a.namespace, selector, clock);
      recorders.set(a.key, r);
      cleanups.push(() => r.stop());
    }
    // On the real cluster the pod watch answers over HTTP: the pods already running must be in the
    // timeline before time zero, or they would count as new.
    await waitFor(() => [...recorders.values()].every((r) => r.size >= scenario.replicas), 10_000);
    // Weights in force before the clients start (the first set-weights step at 0 ms).
    for (const step of scenario.steps) {
      if (step.action === 'set-weights' && step.atMs === 0)
        for (const a of apps) await cluster.applyRoute(canaryRoute(a, step.weights));
    }

    const origin = clock();
    for (const r of recorders.values()) r.setOrigin(origin);
    const seriesBucketMs = Math.max(100, Math.round(scenario.durationMs / 120));
    // The harness is measured over exactly the clients' run: the same window as every figure.
    const harness = new HarnessMonitor({ bucketMs: seriesBucketMs });
    harness.start();
    cleanups.push(() => void harness.stop());
    // Per-endpoint balancer gauges for the report, over the same window.
    const gauges = new GaugeSampler({ everyMs: 250, clock });
    gauges.start(origin);
    cleanups.push(() => void gauges.stop());
    const workloads: Array<{ s: LabStrategy; h: StrategyHandle; w: WorkloadRun }> = handles.map(
      ({ s, h }) => ({
        s,
        h,
        w: startWorkload({
          target: h.target,
          channelOptions: h.channelOptions ?? {},
          ...(tls !== undefined ? { credentials: tls.channelCredentials() } : {}),
          clients: opts.config.clients,
          concurrency: opts.config.concurrency,
          mode: 'loops',
          durationMs: scenario.durationMs,
          deadlineMs: scenario.deadlineMs,
          pacingMs: opts.config.pacingMs,
          clientName: s.name,
          clock,
          originMs: origin,
          // A user's server answers grpc.health.v1 (the pod contract); the pod is the connection's peer.
          rpc: userPods ? 'health' : 'hello',
        }),
      }),
    );
    cleanups.push(async () => {
      await Promise.all(workloads.map((x) => x.w.stop()));
    });

    // A blackholed pod per Service: when, and when the API showed it not Ready.
    const blackholes = new Map<
      string,
      { pod: string; atMs: number; unready: ReturnType<typeof watchUnready> }
    >();
    const onKilled = (app: AppDeployments, pod: string, signal: PodSignal): void => {
      for (const w of watches.values()) if (w.plan.namespace === app.namespace) w.expectExit(pod);
      if (signal !== 'SIGSTOP' || blackholes.has(app.key)) return;
      const unready = watchUnready(cluster, app.namespace, app.selector, pod, clock);
      blackholes.set(app.key, { pod, atMs: clock() - origin, unready });
      cleanups.push(() => unready.stop());
    };
    const events: ScenarioEvent[] = [];
    const steps = new StepScheduler<ScenarioStep>(
      (step, ctx) => applyStep(cluster, apps, step, opts.random, ctx, onKilled),
      (step) => {
        events.push({ atMs: clock() - origin, label: stepLabel(step) });
        progress(`  ${scenario.name}: ${stepLabel(step)}`);
      },
      (label) => {
        events.push({ atMs: clock() - origin, label });
        progress(`  ${scenario.name}: ${label}`);
      },
    );
    steps.start(scenario.steps);
    cleanups.push(() => steps.stop());

    const ticker = setInterval(() => {
      const elapsed = Math.round((clock() - origin) / 1000);
      const counts = workloads.map((x) => `${x.s.name} ${x.w.started()}`).join(', ');
      progress(`  ${scenario.name} ${elapsed}/${Math.round(scenario.durationMs / 1000)} s: ${counts}`);
    }, 2000);
    ticker.unref();
    cleanups.push(() => clearInterval(ticker));

    await Promise.all(workloads.map((x) => x.w.done));
    clearInterval(ticker);
    const measured = harness.stop(scenario.deadlineMs);
    const gaugeSamples = gauges.stop();
    const verdict = harnessVerdict(measured.figures, { deadlineMs: scenario.deadlineMs });
    if (verdict.saturated) progress(`  ${scenario.name}: SATURATED: ${verdict.reason}`);
    if (steps.errors.length > 0) {
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `scenario ${scenario.name}: a step failed: ${String(steps.errors[0])}`,
        { cause: steps.errors[0] },
      );
    }

    // Pods rewrite their counts every COUNT_FLUSH_MS: wait for the last RPCs' to land.
    let received: Map<string, number> | undefined;
    if (countDir !== undefined) {
      await new Promise((r) => setTimeout(r, 3 * COUNT_FLUSH_MS));
      received = readReceivedCounts(countDir);
    }
    const runs: ReportRun[] = [];
    const incomplete: IncompleteRun[] = [];
    for (const { s, h, w } of workloads) {
      const key = manifests ? s.name : s.flavour;
      const recorder = recorders.get(key) as PodTimelineRecorder;
      // A container of the overlay that crash-looped or was refused by the API fails this run alone.
      const broke = watches.get(s)?.failure();
      if (broke !== undefined) {
        const plan = plans.get(s) as OverlayPlan;
        failed.push({ strategy: s.name, reason: failureReason(failureError(plan, broke)) });
        progress(`  ${scenario.name}: ${s.name} FAILED: ${broke}`);
        continue;
      }
      const short = incompleteRun({
        strategy: s.name,
        tMs: w.log.tMs,
        durationMs: scenario.durationMs,
        deadlineMs: scenario.deadlineMs,
        pacingMs: opts.config.pacingMs,
        failurePauseMs: LAB_DEFAULTS.workload.failurePauseMs,
        loopDelayMsMax: measured.figures.loopDelayMsMax,
        ended: w.ended(),
      });
      if (short !== undefined) {
        incomplete.push(short);
        progress(`  ${scenario.name}: ${s.name} INCOMPLETE: ${short.reason}`);
      }
      if (userPods) w.log.renamePods((peer) => recorder.podForAddress(peer) ?? peer);
      const timeline = recorder.timelines();
      const record: LabRunRecord = computeRunRecord({
        scenario: scenario.name,
        strategy: s.name,
        cluster: cluster.kind,
        tls: tls !== undefined,
        records: w.log,
        timeline,
        steadyWindowMs: [scenario.steady.fromMs, scenario.steady.toMs],
        durationMs: scenario.durationMs,
        // Every strategy of a scenario runs at once in this process: they share one harness.
        harness: { ...measured.figures, ...verdict },
      });
      Object.assign(record, retryLoad(record.rpcs, received, s.name, opts.config.clients));
      const plan = plans.get(s);
      if (plan !== undefined) record.overlay = plan.overlay;
      // The first failed RPCs as grpc-js told them (a deadline says where its time went).
      for (const f of w.failures())
        progress(
          `  ${scenario.name}: ${s.name}: failed RPC at ${(f.tMs / 1000).toFixed(2)} s, client ${f.client}: ${f.status}: ${f.details}`,
        );
      // RPCs failed while every container of the overlay ran: its helpers' last words say why.
      if (plan !== undefined && record.failed > 0)
        for (const l of (await watches.get(s)?.helperLogs(3)) ?? []) progress(`  ${s.name}: ${l}`);
      if (isCanary && scenario.canaryShare !== undefined) {
        // The canary's pods: deploy/canary's hello-v2 with --manifests, the lab's hello-canary without.
        const selector = plan?.deployments.find((d) => d.name === CANARY_DEPLOYMENT)?.selector ?? {
          svc: 'hello-canary',
        };
        const canaryName = plan !== undefined ? CANARY_DEPLOYMENT : 'hello-canary';
        record.canary = canaryFigures(
          w.log,
          (pod) => recorder.podMatches(pod, selector),
          weightPhases(scenario.steps, scenario.durationMs, scenario.canaryShare.settleMs),
        );
        progress(`  ${scenario.name}: ${canaryLine(s.name, record.canary, canaryName)}`);
        const off = canaryVerdict(record.canary, scenario.canaryShare.tolerancePct, canaryName);
        if (off !== undefined) {
          const reason = failureReason(new GrpcKubeError('GK_ERR_LAB_CANARY_WEIGHTS', off));
          failed.push({ strategy: s.name, reason });
          progress(`  ${scenario.name}: ${s.name} FAILED: ${reason}`);
        }
      }
      const hole = blackholes.get(key);
      if (hole !== undefined) {
        const unreadyAt = hole.unready.unreadyAtMs();
        record.blackhole = blackholeFigures(
          w.log,
          { pod: hole.pod, atMs: hole.atMs, unreadyAtMs: unreadyAt === null ? null : unreadyAt - origin },
          keepaliveWindowMs(h.channelOptions ?? {}),
        );
      }
      const series = podRateSeries(w.log, {
        bucketMs: seriesBucketMs,
        endMs: scenario.durationMs,
        podOrder: timeline.map((p) => p.name),
      });
      const policy = policyOf(handles.find((x) => x.s === s)?.h.channelOptions ?? {});
      const endpoints =
        policy === undefined
          ? undefined
          : endpointSeries(gaugeSamples, { policy, label: (a) => recorder.podForAddress(a) });
      runs.push({
        ...(endpoints !== undefined ? { endpoints } : {}),
        record,
        series,
        events: [...events],
        steadyWindowMs: [scenario.steady.fromMs, scenario.steady.toMs],
        podsPerClient: distinctPodsPerClient(w.log, opts.config.clients),
        harness: measured.series,
      });
    }
    return { scenario: scenario.name, runs, skipped, failed, incomplete };
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch {
        // teardown continues: every part must be released
      }
    }
  }
}

/** Its clients dial a `dns:` target: with --manifests its overlay client's TARGET, else its own word. */
function dialsDns(s: LabStrategy, plan: OverlayPlan | undefined): boolean {
  return plan !== undefined ? plan.client.target.startsWith('dns:') : s.dialsDns === true;
}

/**
 * The strategies of a lab run whose clients dial a `dns:` target (what alternativeResolverError
 * needs before the run): with `manifests`, what each overlay's client dials; one without an overlay
 * is not counted (it fails alone, with its own reason).
 */
export function dnsDialingStrategies(
  strategies: readonly LabStrategy[],
  opts: { manifests: boolean; manifestsRoot?: string },
): string[] {
  return strategies
    .filter((s) => {
      if (!opts.manifests) return dialsDns(s, undefined);
      try {
        const root = opts.manifestsRoot ?? packageRoot();
        return dialsDns(s, planOverlay({ root, strategy: s.name, canary: false, replicas: 1 }));
      } catch {
        return false;
      }
    })
    .map((s) => s.name);
}

/**
 * Attempts = requests the pods received from a strategy's clients (`<strategy>-<i>`); retryLoadPct =
 * (attempts − calls) / calls, in %: the extra load retries and hedges put on the pods. Null without
 * counts (`--pod-command`: the user's server does not count). A call that reached no pod (no
 * endpoint, a connection refused) makes no attempt, so the figure can be below 0.
 */
export function retryLoad(
  calls: number,
  received: ReadonlyMap<string, number> | undefined,
  strategy: string,
  clients: number,
): { attempts: number | null; retryLoadPct: number | null } {
  if (received === undefined) return { attempts: null, retryLoadPct: null };
  let attempts = 0;
  for (let ci = 0; ci < clients; ci++) attempts += received.get(`${strategy}-${ci}`) ?? 0;
  return { attempts, retryLoadPct: calls > 0 ? ((attempts - calls) / calls) * 100 : null };
}

async function applyStep(
  cluster: LabCluster,
  apps: readonly AppDeployments[],
  step: ScenarioStep,
  random: () => number,
  ctx: StepContext,
  onKilled: (app: AppDeployments, pod: string, signal: PodSignal) => void,
): Promise<void> {
  switch (step.action) {
    case 'scale':
      for (const a of apps) for (const d of a.deployments) await cluster.scale(a.namespace, d, step.replicas);
      return;
    case 'rollout': {
      const stamp = new Date().toISOString();
      for (const a of apps)
        for (const d of a.deployments) await cluster.restartRollout(a.namespace, d, stamp);
      return;
    }
    case 'kill-pods':
      for (const a of apps) {
        const pods = (await cluster.listPods(a.namespace, a.selector))
          .filter((p) => !p.metadata.deletionTimestamp)
          .map((p) => p.metadata.name as string)
          .sort();
        for (let i = 0; i < step.count && pods.length > 0; i++) {
          const [name] = pods.splice(Math.floor(random() * pods.length), 1);
          await cluster.killPodProcess(a.namespace, name as string, step.signal);
          onKilled(a, name as string, step.signal);
        }
      }
      return;
    case 'api-down': {
      await cluster.apiDown();
      // The API is back when it answers again (a real kube-apiserver takes seconds to be ready):
      // the report marks that moment, not the one the restart began. If the scenario ends first,
      // the API comes back before the cluster stops.
      let up: Promise<void> | undefined;
      const bringUp = (): Promise<void> =>
        (up ??= cluster.apiUp().then(
          () => ctx.mark('API back'),
          (err: unknown) => ctx.mark(`API restart failed: ${String(err)}`),
        ));
      ctx.later(bringUp, step.forMs);
      ctx.finish(bringUp);
      return;
    }
    case 'set-weights':
      for (const a of apps) await cluster.applyRoute(canaryRoute(a, step.weights));
      return;
  }
}

/**
 * The GRPCRoute of the canary-shift scenario: parent `hello`, backends `hello` and `hello-canary`;
 * with --manifests deploy/canary's own route `hello`, backends `hello-v1` and `hello-v2`.
 */
function canaryRoute(app: AppDeployments, weights: { stable: number; canary: number }): KubeObject {
  const overlay = app.namespace !== LAB_NAMESPACE;
  const route = canaryGrpcRoute({
    namespace: app.namespace,
    service: 'hello',
    port: LAB_PORT,
    stableService: overlay ? 'hello-v1' : 'hello',
    canaryService: overlay ? 'hello-v2' : 'hello-canary',
    weights,
  }) as unknown as KubeObject;
  if (overlay) route.metadata.name = 'hello';
  return route;
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end)
      throw new GrpcKubeError('GK_ERR_LAB', `the lab's stand-ins did not sync within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
