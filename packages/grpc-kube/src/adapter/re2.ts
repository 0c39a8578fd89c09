// The one door to RE2 (re2-wasm: Google's RE2 compiled to WebAssembly, the engine @grpc/grpc-js-xds
// matches xDS `safe_regex` with, so the proxy and proxyless clients agree on every pattern).
// GRPCRoute `RegularExpression` matches run against client-controlled paths and headers; the Gateway
// API specifies RE2 semantics, and RE2 matches in time linear in the input where JavaScript's
// backtracking engine takes exponential time on `(a|aa)+`. RE2 also rejects what it cannot run in
// linear time (backreferences, lookaround), which makes such a route invalid instead of slow.
//
// re2-wasm objects hold WebAssembly memory that the JS garbage collector does not free, so compiled
// patterns live in one bounded cache and are deleted explicitly when evicted.

import { createRequire } from 'node:module';

interface Re2Instance {
  test(input: string): boolean;
}
interface Re2Module {
  RE2: new (pattern: string, flags: string) => Re2Instance;
}

const require = createRequire(import.meta.url);
let re2: Re2Module | undefined;
/** Loaded on first use: the WebAssembly module costs a few ms and ~1 MB, most processes never need it. */
function engine(): Re2Module {
  re2 ??= require('re2-wasm') as Re2Module;
  return re2;
}

/** Most compiled patterns kept; a route table rarely has more than a few dozen distinct ones. */
const MAX_CACHED = 512;
const cache = new Map<string, Re2Instance>();

function release(re: Re2Instance): void {
  // The embind wrapper's delete() frees the WebAssembly side; re2-wasm keeps it in a private field.
  (re as unknown as { wrapper?: { delete?: () => void } }).wrapper?.delete?.();
}

/** Compile `^(?:source)$` (Gateway API patterns match the whole value), cached. Throws SyntaxError. */
function compiled(source: string): Re2Instance {
  let re = cache.get(source);
  if (re !== undefined) {
    // Most recently used last: Map keeps insertion order, so the first key is the eviction victim.
    cache.delete(source);
    cache.set(source, re);
    return re;
  }
  re = new (engine().RE2)(`^(?:${source})$`, 'u');
  if (cache.size >= MAX_CACHED) {
    const [oldest, victim] = cache.entries().next().value as [string, Re2Instance];
    cache.delete(oldest);
    release(victim);
  }
  cache.set(source, re);
  return re;
}

/** Why RE2 rejects `source`, or undefined when it is a valid RE2 pattern. */
export function re2Error(source: string): string | undefined {
  try {
    // The bare pattern first: `a)|(b` is invalid alone but would compile inside `^(?:…)$`.
    release(new (engine().RE2)(source, 'u'));
    compiled(source);
    return undefined;
  } catch (err) {
    // re2-wasm says "Invalid regular expression: /^(?:x)$/u: missing ]: [": keep RE2's own reason.
    const msg = (err as Error).message;
    return /\/u: (.*)$/s.exec(msg)?.[1] ?? msg;
  }
}

/** Whether all of `value` matches the RE2 pattern `source` (false for a pattern RE2 rejects). */
export function re2FullMatch(source: string, value: string): boolean {
  try {
    return compiled(source).test(value);
  } catch {
    return false;
  }
}
