import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EndpointResolver, pickable } from 'grpc-kube/internal/resolver/endpoint-resolver.js';
import type { EndpointListener } from 'grpc-kube/internal/discovery/kube-source.js';
import { ENDPOINT_INFO_ATTRIBUTE, type ResolverListener } from 'grpc-kube/internal/adapter/grpc-js.js';
import { viewOf, type Endpoint } from 'grpc-kube/internal/discovery/endpoint.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

function feed() {
  const f = {
    opens: 0,
    closes: 0,
    listener: undefined as EndpointListener | undefined,
    open: (l: EndpointListener) => {
      f.opens++;
      f.listener = l;
      return {
        unsubscribe: () => {
          f.closes++;
          f.listener = undefined;
        },
      };
    },
  };
  return f;
}

const tick = () => new Promise((r) => setImmediate(r));
const ep = (address: string, state: Endpoint['state']): Endpoint => ({ address, port: 80, state });

test('the listener is never called synchronously, and bursts are coalesced into one delivery', async () => {
  const f = feed();
  const calls: Array<Parameters<ResolverListener>> = [];
  const r = new EndpointResolver(
    ((...a: Parameters<ResolverListener>) => (calls.push(a), true)) as ResolverListener,
    {
      describe: 'svc',
      open: f.open,
      serviceConfig: { loadBalancingConfig: [{ round_robin: {} }], methodConfig: [] },
    },
  );
  r.updateResolution();
  assert.equal(f.opens, 1);
  f.listener?.onEndpoints(viewOf([ep('10.0.0.1', 'ready')]), { added: [], removed: [], changed: [] });
  f.listener?.onEndpoints(viewOf([ep('10.0.0.1', 'ready'), ep('10.0.0.2', 'draining')]), {
    added: [],
    removed: [],
    changed: [],
  });
  assert.equal(calls.length, 0, 'not synchronous');
  await tick();
  assert.equal(calls.length, 1, 'coalesced');
  const [list, attrs, sc, note] = calls[0]!;
  assert.ok(list.ok);
  assert.deepEqual(list.ok && list.value, [{ addresses: [{ host: '10.0.0.1', port: 80 }] }]);
  const info = attrs[ENDPOINT_INFO_ATTRIBUTE] as Map<string, Endpoint>;
  assert.equal(info.get('10.0.0.2:80')?.state, 'draining', 'policies still see the draining endpoint');
  assert.ok(sc?.ok);
  assert.equal(note, 'svc: 1 ready, 1 draining, 0 unready');
  r.updateResolution();
  assert.equal(f.opens, 1, 'updateResolution on a live feed does not re-open it');
});

test('destroy() stops the feed and drops pending deliveries; updateResolution() restarts it', async () => {
  const f = feed();
  let calls = 0;
  const r = new EndpointResolver((() => (calls++, true)) as ResolverListener, {
    describe: 'svc',
    open: f.open,
    serviceConfig: null,
  });
  r.updateResolution();
  f.listener?.onEndpoints(viewOf([ep('10.0.0.1', 'ready')]), { added: [], removed: [], changed: [] });
  r.destroy();
  assert.equal(f.closes, 1);
  await tick();
  assert.equal(calls, 0, 'no callback after destroy');
  r.updateResolution();
  assert.equal(f.opens, 2);
  f.listener?.onError(new GrpcKubeError('GK_ERR_KUBE_UNREACHABLE', 'down'));
  await tick();
  assert.equal(calls, 1);
});

test('errors become UNAVAILABLE with the code first; a resolver built on an error reports it async', async () => {
  const calls: Array<Parameters<ResolverListener>> = [];
  const r = new EndpointResolver(
    ((...a: Parameters<ResolverListener>) => (calls.push(a), true)) as ResolverListener,
    {
      describe: 'svc',
      open: new GrpcKubeError('GK_ERR_KUBE_CONFIG', 'no config'),
      serviceConfig: null,
    },
  );
  r.updateResolution();
  assert.equal(calls.length, 0);
  await tick();
  const [list] = calls[0]!;
  assert.equal(list.ok, false);
  assert.equal(!list.ok && list.error.code, 14);
  assert.equal(!list.ok && list.error.details, 'GK_ERR_KUBE_CONFIG: no config');
});

test('pickable: ready first, then draining when nothing is ready, else empty with a reason', () => {
  assert.deepEqual(
    pickable([ep('a', 'ready'), ep('b', 'draining'), ep('c', 'unready')], 's').picked.map((e) => e.address),
    ['a'],
  );
  const d = pickable([ep('b', 'draining'), ep('c', 'unready')], 's');
  assert.deepEqual(
    d.picked.map((e) => e.address),
    ['b'],
  );
  assert.match(d.note, /no ready endpoint, using draining ones/);
  assert.match(
    pickable([ep('c', 'unready')], 's').note,
    /has no ready endpoint \(0 ready, 0 draining, 1 unready\)/,
  );
  assert.match(pickable([], 's').note, /has no endpoints/);
});
