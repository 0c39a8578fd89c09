// Seeded input generators for the fuzz tests: structure-aware mutation of valid seeds (JSON values
// with fields dropped, retyped, swapped for hostile values; strings with characters inserted,
// deleted, repeated), so a failure replays from its seed and case number.

import v8 from 'node:v8';
import vm from 'node:vm';
import { seededRandom } from 'grpc-kube/internal/balancer/runtime.js';

export class Gen {
  readonly random: () => number;
  constructor(seed: number) {
    this.random = seededRandom(seed);
  }

  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }

  chance(p: number): boolean {
    return this.random() < p;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  /** A hostile scalar or shape: wrong types, huge and odd strings, numbers at the edges. */
  weird(): unknown {
    return this.pick<() => unknown>([
      () => null,
      () => undefined,
      () => true,
      () => -1,
      () => 0,
      () => 2 ** 31,
      () => 1e308,
      () => Number.NaN,
      () => 1.5,
      () => '',
      () => 'x'.repeat(this.pick([1, 64, 300, 70_000])),
      () => '../../etc',
      () => '\u0000\ud800\uffff',
      () => '%zz',
      () => '*',
      () => ({}),
      () => [],
      () => [null, 1, 'a'],
      () => ({ __proto__: { polluted: true } }),
      () => this.string('a.b:1/'),
    ])();
  }

  /** A string from `alphabet` plus some hostile characters. */
  string(alphabet: string, max = 40): string {
    const chars = alphabet + ':/.@%-_[]\u00e9\u0000 ';
    let s = '';
    const n = this.int(max);
    for (let i = 0; i < n; i++) s += chars[this.int(chars.length)];
    return s;
  }

  /** `s` with a few characters inserted, deleted, replaced or a slice repeated. */
  mutateString(s: string): string {
    let out = s;
    const n = 1 + this.int(3);
    for (let i = 0; i < n; i++) {
      const at = this.int(out.length + 1);
      switch (this.int(4)) {
        case 0:
          out = out.slice(0, at) + this.string('az09', 3) + out.slice(at);
          break;
        case 1:
          out = out.slice(0, at) + out.slice(at + 1 + this.int(3));
          break;
        case 2:
          out = out.slice(0, at) + this.pick([':', '.', '/', '-', 'A', '9', '%', ' ']) + out.slice(at + 1);
          break;
        default:
          out = out + out.slice(at).repeat(this.int(4));
      }
    }
    return out;
  }

  /** A deep copy of `v` with nodes dropped, retyped or replaced by hostile values (`rate` scales how many). */
  mutateJson(v: unknown, rate = 1, depth = 0): unknown {
    if (this.chance(0.08 * rate)) return this.weird();
    if (typeof v === 'string') return this.chance(0.3 * rate) ? this.mutateString(v) : v;
    if (typeof v === 'number')
      return this.chance(0.2 * rate) ? this.pick([0, -v, v * 1000, v + 0.5, 65536]) : v;
    if (Array.isArray(v)) {
      const out = v.map((x) => this.mutateJson(x, rate, depth + 1));
      if (this.chance(0.1 * rate)) out.push(this.weird());
      if (this.chance(0.05 * rate) && depth < 3) for (let i = 0; i < 50; i++) out.push(out[0]);
      return this.chance(0.05 * rate) ? [] : out;
    }
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (this.chance(0.05 * rate)) continue;
        out[k] = this.mutateJson(x, rate, depth + 1);
      }
      if (this.chance(0.05 * rate)) out[this.string('abc', 8)] = this.weird();
      return out;
    }
    return v;
  }
}

/**
 * V8's full garbage collection, without `--expose-gc` on the command line: the flag turned on at run
 * time gives a fresh context its `gc` function.
 */
function fullGc(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/**
 * Live heap in MiB, measured after full collections: what a test holds, not the garbage it left.
 * Without the collection `heapUsed` counts garbage too, and how much depends on when V8 last ran
 * its collector (a loaded machine's CI run saw one storm test "grow" past its bound that way).
 */
export function heapMiB(): number {
  const gc = fullGc();
  gc();
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}
