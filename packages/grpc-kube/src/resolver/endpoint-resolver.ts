// The bridge from an endpoint feed (Kubernetes watch, DNS poll) to grpc-js's resolver contract:
// never call the listener synchronously (deliveries are coalesced onto one setImmediate), stop the
// feed on destroy(), start it again on updateResolution(). Only endpoints that may take new RPCs are
// handed to grpc-js; what is known of every address travels in ENDPOINT_INFO_ATTRIBUTE for policies.

import { Metadata, status as Status } from '@grpc/grpc-js';
import {
  ENDPOINT_INFO_ATTRIBUTE,
  statusOrFromError,
  statusOrFromValue,
  type ChannelOptions,
  type GrpcEndpoint,
  type ResolvedServiceConfig,
  type Resolver,
  type ResolverListener,
} from '../adapter/grpc-js.js';
import type { GrpcKubeError } from '../errors.js';
import { endpointKey, type Endpoint, type EndpointView } from '../discovery/endpoint.js';
import type { EndpointListener, Subscription } from '../discovery/kube-source.js';

/** Opens the feed for one resolver; called on the first updateResolution() and after destroy(). */
export type FeedOpener = (listener: EndpointListener) => Subscription;

export interface ResolverSettings {
  /** What the target names, for notes and errors: `Service default/hello port 50051`. */
  readonly describe: string;
  readonly open: FeedOpener | GrpcKubeError;
  readonly serviceConfig: ResolvedServiceConfig | null;
  /** Settles when what the service config names is loaded (the policies, under grpc-kube/register). */
  readonly ready?: Promise<void> | undefined;
}

/** Channel option naming the LB policy the resolver's service config selects (default round_robin). */
export const LB_POLICY_OPTION = 'grpc-kube.lb_policy';

export function serviceConfigFor(
  options: ChannelOptions,
  defaultPolicy: string,
): ResolvedServiceConfig | null {
  // A service config the user set on the channel wins: return none so grpc-js uses theirs.
  if (options['grpc.service_config'] !== undefined) return null;
  const policy =
    typeof options[LB_POLICY_OPTION] === 'string' ? (options[LB_POLICY_OPTION] as string) : defaultPolicy;
  return { loadBalancingConfig: [{ [policy]: {} }], methodConfig: [] };
}

export class EndpointResolver implements Resolver {
  private readonly listener: ResolverListener;
  private readonly settings: ResolverSettings;
  private sub: Subscription | undefined;
  private pending: { view: EndpointView } | { err: GrpcKubeError } | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private isReady = false;
  private waiting: Promise<void> | undefined;

  constructor(listener: ResolverListener, settings: ResolverSettings) {
    this.listener = listener;
    this.settings = settings;
  }

  updateResolution(): void {
    if (this.sub !== undefined) return; // the feed pushes every change; nothing to poll
    const open = this.settings.open;
    if (typeof open !== 'function') {
      this.schedule({ err: open });
      return;
    }
    this.sub = open({
      onEndpoints: (view) => this.schedule({ view }),
      onError: (err) => this.schedule({ err }),
    });
  }

  destroy(): void {
    this.sub?.unsubscribe();
    this.sub = undefined;
    this.pending = undefined;
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.immediate = undefined;
  }

  private schedule(update: { view: EndpointView } | { err: GrpcKubeError }): void {
    this.pending = update;
    const ready = this.settings.ready;
    if (ready !== undefined && !this.isReady) {
      // The first delivery waits for the policies its service config may name (the latest update
      // is the one delivered; destroy() in between drops it).
      this.waiting ??= ready.then(() => {
        this.isReady = true;
        if (this.pending !== undefined) this.schedule(this.pending);
      });
      return;
    }
    this.immediate ??= setImmediate(() => {
      this.immediate = undefined;
      const u = this.pending;
      this.pending = undefined;
      if (u !== undefined) this.deliver(u);
    });
  }

  private deliver(u: { view: EndpointView } | { err: GrpcKubeError }): void {
    if ('err' in u) {
      const details = `${u.err.code}: ${u.err.message}`;
      this.listener(
        statusOrFromError({ code: Status.UNAVAILABLE, details, metadata: new Metadata() }),
        {},
        null,
        `${this.settings.describe}: ${details}`,
      );
      return;
    }
    // Materialised once per delivery: a burst of slice events costs one list, not one per event.
    const eps = u.view.endpoints();
    const { picked, note } = pickable(eps, this.settings.describe);
    if (picked.length === 0) {
      // An empty list would leave grpc-js's round_robin IDLE with calls queued until their deadline;
      // an error fails them at once with a message that says why.
      this.listener(
        statusOrFromError({
          code: Status.UNAVAILABLE,
          details: `GK_ERR_NO_ENDPOINTS: ${note}`,
          metadata: new Metadata(),
        }),
        {},
        this.settings.serviceConfig === null ? null : statusOrFromValue(this.settings.serviceConfig),
        note,
      );
      return;
    }
    const info = new Map<string, Endpoint>();
    for (const e of eps) info.set(endpointKey(e), e);
    const endpoints: GrpcEndpoint[] = picked.map((e) =>
      e.port === 0
        ? { addresses: [{ path: e.address }] }
        : { addresses: [{ host: e.address, port: e.port }] },
    );
    this.listener(
      statusOrFromValue(endpoints),
      { [ENDPOINT_INFO_ATTRIBUTE]: info },
      this.settings.serviceConfig === null ? null : statusOrFromValue(this.settings.serviceConfig),
      note,
    );
  }
}

/**
 * Ready endpoints take new RPCs. When none is ready but some are draining (still serving: a
 * rollout with nothing new up yet), those are used rather than failing every call.
 */
export function pickable(eps: readonly Endpoint[], describe: string): { picked: Endpoint[]; note: string } {
  let draining = 0;
  let unready = 0;
  const ready: Endpoint[] = [];
  const serving: Endpoint[] = [];
  for (const e of eps) {
    if (e.state === 'ready') ready.push(e);
    else if (e.state === 'draining') {
      draining++;
      serving.push(e);
    } else unready++;
  }
  const counts = `${ready.length} ready, ${draining} draining, ${unready} unready`;
  if (ready.length > 0) return { picked: ready, note: `${describe}: ${counts}` };
  if (serving.length > 0)
    return { picked: serving, note: `${describe}: no ready endpoint, using draining ones (${counts})` };
  if (eps.length === 0) {
    return {
      picked: [],
      note: `${describe} has no endpoints: check the Service name, namespace and port, and that its pods exist`,
    };
  }
  return { picked: [], note: `${describe} has no ready endpoint (${counts})` };
}
