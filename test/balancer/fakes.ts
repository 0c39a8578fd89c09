// Fake subchannels and a fake ChannelControlHelper: the policy under test runs on grpc-js's own
// LeafLoadBalancer / pick_first children, but connectivity is driven by the test, one transition at
// a time, so state-machine tests are exact and need no sockets.

import { connectivityState as ConnectivityState } from '@grpc/grpc-js';
import {
  ENDPOINT_INFO_ATTRIBUTE,
  PickResultType,
  subchannelAddressToString,
  statusOrFromValue,
  type ChannelControlHelper,
  type ChannelOptions,
  type GrpcEndpoint,
  type PickResult,
  type Picker,
  type SubchannelAddress,
  type SubchannelInterface,
} from 'grpc-kube/internal/adapter/grpc-js.js';
import { Metadata } from '@grpc/grpc-js';
import type { Endpoint } from 'grpc-kube/internal/discovery/endpoint.js';

type Listener = (
  sc: SubchannelInterface,
  prev: number,
  next: number,
  keepalive: number,
  err?: string,
) => void;

let nextId = 1;

export class FakeSubchannel {
  readonly id = nextId++;
  state: number = ConnectivityState.IDLE;
  refs = 0;
  connectRequests = 0;
  private readonly listeners = new Set<Listener>();
  constructor(readonly address: string) {}

  setState(next: number, err?: string): void {
    const prev = this.state;
    this.state = next;
    for (const l of [...this.listeners]) l(this as unknown as SubchannelInterface, prev, next, 0, err);
  }
  getConnectivityState(): number {
    return this.state;
  }
  addConnectivityStateListener(l: Listener): void {
    this.listeners.add(l);
  }
  removeConnectivityStateListener(l: Listener): void {
    this.listeners.delete(l);
  }
  startConnecting(): void {
    this.connectRequests++;
  }
  getAddress(): string {
    return this.address;
  }
  throttleKeepalive(): void {}
  ref(): void {
    this.refs++;
  }
  unref(): void {
    this.refs--;
  }
  getChannelzRef(): { kind: 'subchannel'; id: number; name: string } {
    return { kind: 'subchannel', id: this.id, name: this.address };
  }
  isHealthy(): boolean {
    return true;
  }
  addHealthStateWatcher(): void {}
  removeHealthStateWatcher(): void {}
  addDataWatcher(): void {}
  getRealSubchannel(): unknown {
    return this;
  }
  realSubchannelEquals(other: unknown): boolean {
    return other === this;
  }
}

export class FakeHelper {
  readonly subchannels = new Map<string, FakeSubchannel>();
  readonly updates: Array<{ state: number; picker: Picker; error: string | null }> = [];
  reresolutions = 0;

  createSubchannel(address: SubchannelAddress): SubchannelInterface {
    const key = subchannelAddressToString(address);
    let sc = this.subchannels.get(key);
    if (sc === undefined) {
      sc = new FakeSubchannel(key);
      this.subchannels.set(key, sc);
    }
    return sc as unknown as SubchannelInterface;
  }
  updateState(state: number, picker: Picker, error: string | null): void {
    this.updates.push({ state, picker, error });
  }
  requestReresolution(): void {
    this.reresolutions++;
  }
  addChannelzChild(): void {}
  removeChannelzChild(): void {}

  asHelper(): ChannelControlHelper {
    return this as unknown as ChannelControlHelper;
  }
  get last(): { state: number; picker: Picker; error: string | null } {
    const u = this.updates[this.updates.length - 1];
    if (u === undefined) throw new Error('no state reported yet');
    return u;
  }
  sc(key: string): FakeSubchannel {
    const sc = this.subchannels.get(key);
    if (sc === undefined) throw new Error(`no subchannel for ${key}`);
    return sc;
  }
  /** Drive one subchannel to READY through CONNECTING, as a real connection would. */
  connect(key: string): void {
    const sc = this.sc(key);
    sc.setState(ConnectivityState.CONNECTING);
    sc.setState(ConnectivityState.READY);
  }
}

export function endpoints(...keys: string[]): ReturnType<typeof statusOrFromValue<GrpcEndpoint[]>> {
  return statusOrFromValue(
    keys.map((k) => {
      const [host, port] = k.split(':');
      return { addresses: [{ host: host as string, port: Number(port) }] };
    }),
  );
}

export function infoOptions(eps: Array<Partial<Endpoint> & { key: string }>): ChannelOptions {
  const map = new Map<string, Endpoint>();
  for (const e of eps) {
    const [address, port] = e.key.split(':');
    const { key: _key, ...rest } = e;
    map.set(e.key, { address: address as string, port: Number(port), state: 'ready', ...rest });
  }
  return { [ENDPOINT_INFO_ATTRIBUTE]: map } as ChannelOptions;
}

export const pickArgs = { metadata: new Metadata(), extraPickInfo: {} };

/** Pick once; returns the subchannel address, or 'QUEUE' / 'FAIL'. Optionally start (and end) the call. */
export function pickOnce(
  picker: Picker,
  mode: 'end' | 'hold' | 'none' = 'end',
): { key: string; result: PickResult } {
  const result = picker.pick(pickArgs);
  if (result.pickResultType === PickResultType.QUEUE) return { key: 'QUEUE', result };
  if (result.pickResultType !== PickResultType.COMPLETE) return { key: 'FAIL', result };
  const sc = result.subchannel as unknown as FakeSubchannel;
  if (mode !== 'none') result.onCallStarted?.();
  if (mode === 'end') result.onCallEnded?.(0, 'OK', new Metadata());
  return { key: sc.address, result };
}

export function countPicks(picker: Picker, n: number, mode: 'end' | 'hold' = 'end'): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const { key } = pickOnce(picker, mode);
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/** An RNG that replays the given values in order (then repeats them), for exact pick sequences. */
export function scriptedRandom(values: number[]): () => number {
  let i = 0;
  return () => {
    const v = values[i % values.length] as number;
    i++;
    return v;
  };
}
