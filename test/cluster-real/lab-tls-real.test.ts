// `grpc-kube lab --tls --cluster real`: the real kube-apiserver and controllers, pods in network
// namespaces on 10.244.x.y, each given a certificate from the run's CA (its netns address and its
// Service's DNS names) as the lab kubelet starts it; clients verify it. Before, the lab refused
// --tls off the embedded cluster. Asserted as on the embedded cluster (test/lab/lab-tls.test.ts):
// each TLS path answers, and the strategies that follow EndpointSlices lose no RPC in the rollout.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LabRunRecord } from '@grpc-kube/lab/internal/lab/metrics.js';
import { runNode, unsaturatedLab } from '../helpers/lab.js';
import { realLabSkip } from '../helpers/real.js';

const CLI = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));
// One strategy per TLS path (the resolver's channel, the ingress proxy, the sidecar, xDS): every
// default strategy beside the real control plane saturated the 2-core machine under a CPU hog.
const LOSSLESS = ['kubernetes', 'proxy', 'sidecar', 'xds'];

let dir: string | undefined;
after(() => (dir === undefined ? undefined : rm(dir, { recursive: true, force: true })));

test(
  'grpc-kube lab --tls --cluster real --scenario rolling-update: pods serve the lab CA, 0 failed where the lab follows EndpointSlices',
  { skip: realLabSkip(), timeout: 900_000 },
  async (t) => {
    dir = await mkdtemp(join(tmpdir(), 'grpc-kube-lab-tls-real-'));
    const jsonFile = join(dir, 'lab.json');
    const args = [CLI, 'lab', '--tls', '--cluster', 'real', '--quick', '--scenario', 'rolling-update'];
    args.push('--strategy', LOSSLESS.join(','));
    const holds = (runs: readonly LabRunRecord[]): void => {
      assert.ok(runs.length > 0);
      for (const r of runs) {
        assert.equal(r.cluster, 'real');
        // (how many depends on the machine's speed over the run's fixed duration: only that some did)
        assert.ok(r.rpcs - r.failed > 0, `${r.strategy} tls=${r.tls}: ${r.rpcs - r.failed} RPCs succeeded`);
      }
      for (const name of LOSSLESS) {
        const r = runs.find((x) => x.strategy === name && x.tls);
        assert.ok(r, `no TLS run for ${name}`);
        t.diagnostic(
          `${name} over TLS: ${r.rpcs} RPCs, ${r.failed} failed ${JSON.stringify(r.failedByCode)}, p50/p99 ${r.latencyMs.p50}/${r.latencyMs.p99} ms`,
        );
        assert.equal(r.newPodsNeverServed, 0, `${name} over TLS served every new pod`);
        // Every path, the proxies' too: the sidecar's one loss of ~135 (DEADLINE_EXCEEDED, beside a
        // one-core hog) was a pod held by its synchronous count-file write (see lab-tls.test.ts).
        assert.equal(r.failed, 0, `${name} over TLS: ${JSON.stringify(r.failedByCode)}`);
      }
    };
    // A run the machine saturated is accepted when every assertion still holds (a stall can expire
    // RPCs, never hide a loss), else re-run.
    await unsaturatedLab(
      t,
      async () => {
        const r = await runNode([...args, '--json', jsonFile, '--clients', '1', '--pacing', '200']);
        assert.equal(r.code, 0, `grpc-kube lab --tls --cluster real failed:\n${r.stderr.slice(-3000)}`);
        return (JSON.parse(await readFile(jsonFile, 'utf8')) as { runs: LabRunRecord[] }).runs;
      },
      (runs) => runs,
      3,
      holds,
    );
  },
);
