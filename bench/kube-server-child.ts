// The adversarial API server of test/kube in its own process (so the kube bench measures the
// client alone): TLS with HTTP/2, N Services of one EndpointSlice each. argv: `scale N` (behaves) or
// `empty N` (every watch answered 200 with no event and ended). On {round: r} it gives every
// Service the address 10.r.0.1 and answers {round, startedAt} (epoch ms, before the first write);
// {requests: true} answers the request counts; {exit: true} closes.
import { AdversarialApiServer, slice } from '../test/kube/adversarial-server.js';

const [mode, n] = [process.argv[2] ?? 'scale', Number(process.argv[3] ?? 1000)];
const api = await AdversarialApiServer.start({ transport: 'h2', bookmarkIntervalMs: 60_000 });
if (mode === 'empty') api.fault = (kind) => (kind === 'watch' ? 'empty' : 'none');
const put = (r: number): void => {
  for (let i = 0; i < n; i++) api.put('endpointslices', slice('default', `svc-${i}`, [`10.${r}.0.1`]));
};
put(0);
process.on('message', (m: { round?: number; requests?: boolean; exit?: boolean }) => {
  if (m.exit) {
    void api.close().then(() => process.exit(0));
    return;
  }
  if (m.requests) {
    process.send?.({ requests: api.requests, openWatches: api.openWatches });
    return;
  }
  if (m.round !== undefined) {
    const startedAt = performance.timeOrigin + performance.now();
    put(m.round);
    process.send?.({ round: m.round, startedAt });
  }
});
process.send?.({ kubeconfig: api.kubeConfigYaml() });
