// The endpoint model every consumer reads: one Endpoint per (address, port) of a Service port, and an
// EndpointSet that merges the groups it comes in (EndpointSlices, DNS answers, static lists) into one
// deduplicated view and reports a diff on every update.
//
// Updates are incremental: replacing one group touches only the keys that group had or has, so an
// event on one slice of a 50-slice Service costs O(slice), not O(service).

export type EndpointState = 'ready' | 'draining' | 'unready';

export interface Endpoint {
  /** IP address in canonical form, or a unix socket path when `port` is 0. */
  readonly address: string;
  readonly port: number;
  readonly state: EndpointState;
  readonly pod?: string | undefined;
  readonly node?: string | undefined;
  readonly zone?: string | undefined;
  readonly hostname?: string | undefined;
  /** Relative weight for policies that honour it; absent means 1. */
  readonly weight?: number | undefined;
  /** Zones this endpoint is hinted for (EndpointSlice `hints.forZones`). */
  readonly zoneHints?: readonly string[] | undefined;
}

export interface EndpointChange {
  readonly before: Endpoint;
  readonly after: Endpoint;
}

export interface EndpointDiff {
  readonly added: readonly Endpoint[];
  readonly removed: readonly Endpoint[];
  readonly changed: readonly EndpointChange[];
}

export const EMPTY_DIFF: EndpointDiff = Object.freeze({
  added: Object.freeze([]),
  removed: Object.freeze([]),
  changed: Object.freeze([]),
}) as EndpointDiff;

export function isEmptyDiff(diff: EndpointDiff): boolean {
  return diff.added.length === 0 && diff.removed.length === 0 && diff.changed.length === 0;
}

/** `10.0.0.1:80`, `[fd00::1]:80`, or the socket path for unix endpoints. */
export function endpointKey(e: { address: string; port: number }): string {
  if (e.port === 0) return e.address;
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

const STATE_RANK: Record<EndpointState, number> = { ready: 2, draining: 1, unready: 0 };

/** Two endpoints are equal when every field a consumer can read is equal. */
export function endpointEqual(a: Endpoint, b: Endpoint): boolean {
  return (
    a.address === b.address &&
    a.port === b.port &&
    a.state === b.state &&
    a.pod === b.pod &&
    a.node === b.node &&
    a.zone === b.zone &&
    a.hostname === b.hostname &&
    (a.weight ?? 1) === (b.weight ?? 1) &&
    sameStrings(a.zoneHints, b.zoneHints)
  );
}

function sameStrings(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * When the same address is listed by two groups (an endpoint moving between slices, or a stale
 * slice not yet deleted), the best-informed copy wins: a higher state rank, then the lexically first
 * group, so the result does not depend on event order.
 */
function better(a: { group: string; ep: Endpoint }, b: { group: string; ep: Endpoint }): boolean {
  const ra = STATE_RANK[a.ep.state];
  const rb = STATE_RANK[b.ep.state];
  if (ra !== rb) return ra > rb;
  return a.group < b.group;
}

/** Read access to a live endpoint set; endpoints() materialises (and caches) the sorted list. */
export interface EndpointView {
  readonly size: number;
  endpoints(): readonly Endpoint[];
}

/** A fixed list as an EndpointView. */
export function viewOf(eps: readonly Endpoint[]): EndpointView {
  return { size: eps.length, endpoints: () => eps };
}

interface Entry {
  /** Every group that lists this key, with its copy. Almost always one element. */
  readonly copies: Array<{ group: string; ep: Endpoint }>;
  winner: Endpoint;
}

export class EndpointSet implements EndpointView {
  private readonly groups = new Map<string, Map<string, Endpoint>>();
  private readonly entries = new Map<string, Entry>();
  private snapshot: readonly Endpoint[] | null = null;
  /** Sorted keys, kept until a key is added or removed: state flips reuse them, skipping the sort. */
  private sortedKeys: string[] | null = null;

  /** Number of distinct endpoints (by address and port). */
  get size(): number {
    return this.entries.size;
  }

  get groupNames(): string[] {
    return [...this.groups.keys()];
  }

  /** All endpoints, sorted by key; the array is frozen and reused until the next change. */
  endpoints(): readonly Endpoint[] {
    if (this.snapshot === null) {
      this.sortedKeys ??= [...this.entries.keys()].sort();
      this.snapshot = Object.freeze(this.sortedKeys.map((k) => (this.entries.get(k) as Entry).winner));
    }
    return this.snapshot;
  }

  get(key: string): Endpoint | undefined {
    return this.entries.get(key)?.winner;
  }

  /** Replace everything one group (a slice) says. Returns what changed in the merged view. */
  replaceGroup(group: string, endpoints: Iterable<Endpoint>): EndpointDiff {
    const next = new Map<string, Endpoint>();
    for (const ep of endpoints) {
      const key = endpointKey(ep);
      const prev = next.get(key);
      // A group listing one address twice: keep the better copy, as across groups.
      if (prev === undefined || STATE_RANK[ep.state] > STATE_RANK[prev.state]) next.set(key, ep);
    }
    const old = this.groups.get(group);
    if (next.size === 0) this.groups.delete(group);
    else this.groups.set(group, next);
    const added: Endpoint[] = [];
    const removed: Endpoint[] = [];
    const changed: EndpointChange[] = [];
    // Only keys whose copy in this group changed are touched: a slice event that flips one endpoint
    // of a hundred does one merge, not a hundred.
    for (const [key, ep] of next) {
      const was = old?.get(key);
      if (was !== undefined && endpointEqual(was, ep)) continue;
      this.applyKey(group, key, ep, added, removed, changed);
    }
    if (old !== undefined) {
      for (const key of old.keys())
        if (!next.has(key)) this.applyKey(group, key, undefined, added, removed, changed);
    }
    if (added.length + removed.length + changed.length === 0) return EMPTY_DIFF;
    this.snapshot = null;
    return { added, removed, changed };
  }

  deleteGroup(group: string): EndpointDiff {
    return this.replaceGroup(group, []);
  }

  /** Replace all groups at once (a re-list): groups not named are deleted. One combined diff. */
  replaceAll(groups: ReadonlyMap<string, Iterable<Endpoint>>): EndpointDiff {
    const before = new Map<string, Endpoint>();
    for (const [k, e] of this.entries) before.set(k, e.winner);
    for (const name of [...this.groups.keys()]) if (!groups.has(name)) this.replaceGroup(name, []);
    for (const [name, eps] of groups) this.replaceGroup(name, eps);
    return diffMaps(before, this.entries);
  }

  private applyKey(
    group: string,
    key: string,
    ep: Endpoint | undefined,
    added: Endpoint[],
    removed: Endpoint[],
    changed: EndpointChange[],
  ): void {
    const entry = this.entries.get(key);
    if (entry === undefined) {
      if (ep === undefined) return;
      this.entries.set(key, { copies: [{ group, ep }], winner: ep });
      this.sortedKeys = null;
      added.push(ep);
      return;
    }
    const before = entry.winner;
    const i = entry.copies.findIndex((c) => c.group === group);
    if (ep === undefined) {
      if (i >= 0) entry.copies.splice(i, 1);
    } else if (i >= 0) {
      entry.copies[i] = { group, ep };
    } else {
      entry.copies.push({ group, ep });
    }
    if (entry.copies.length === 0) {
      this.entries.delete(key);
      this.sortedKeys = null;
      removed.push(before);
      return;
    }
    let best = entry.copies[0] as { group: string; ep: Endpoint };
    for (const c of entry.copies) if (better(c, best)) best = c;
    entry.winner = best.ep;
    if (!endpointEqual(before, best.ep)) changed.push({ before, after: best.ep });
  }
}

function diffMaps(before: ReadonlyMap<string, Endpoint>, after: ReadonlyMap<string, Entry>): EndpointDiff {
  const added: Endpoint[] = [];
  const removed: Endpoint[] = [];
  const changed: EndpointChange[] = [];
  for (const [k, e] of after) {
    const b = before.get(k);
    if (b === undefined) added.push(e.winner);
    else if (!endpointEqual(b, e.winner)) changed.push({ before: b, after: e.winner });
  }
  for (const [k, b] of before) if (!after.has(k)) removed.push(b);
  if (added.length + removed.length + changed.length === 0) return EMPTY_DIFF;
  return { added, removed, changed };
}

/** Endpoints that may take new RPCs. */
export function readyEndpoints(eps: readonly Endpoint[]): Endpoint[] {
  return eps.filter((e) => e.state === 'ready');
}
