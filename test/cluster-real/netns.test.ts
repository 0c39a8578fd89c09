// The lab network: real network namespaces and veth pairs (needs root and iproute2, skipped
// otherwise). A grpc-js server inside a pod namespace answers a client on the host at its pod IP, an
// address of the CIDR without a pod fails locally (EHOSTUNREACH, the unreachable route), a pod reaches
// another pod at its pod IP (routed through the host, as a proxy pod reaches the server pods) and has
// no way out of the CIDR, a blackholed pod drops everything silently (the real cluster's blackhole
// scenario), and teardown removes everything, twice without error.

import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

import * as grpc from '@grpc/grpc-js';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  createLabNetwork,
  type LabNetwork,
  type PodNetwork,
} from '@grpc-kube/lab/internal/cluster/real/netns.js';

function canRun(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'needs iproute2 (`ip`)';
  }
  return false;
}

function ipOut(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

const whoAmI = {
  whoAmI: {
    path: '/grpckube.lab.Echo/WhoAmI',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
} as const;

// The pod: a grpc-js server that answers WhoAmI with the address it was started for.
const serverSource = (grpcUrl: string): string => `
import grpc from ${JSON.stringify(grpcUrl)};
const [ip, port] = process.argv.slice(2);
const id = (b) => b;
const server = new grpc.Server();
server.addService(
  { whoAmI: { path: '/grpckube.lab.Echo/WhoAmI', requestStream: false, responseStream: false,
    requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } },
  { whoAmI: (_call, cb) => cb(null, Buffer.from(ip)) },
);
server.bindAsync(ip + ':' + port, grpc.ServerCredentials.createInsecure(), (err, p) => {
  if (err) { console.error(String(err)); process.exit(1); }
  console.log('listening ' + p);
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
`;

function waitForLine(child: ChildProcess, re: RegExp, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no ${re} within ${ms} ms: ${out}`)), ms);
    timer.unref();
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (re.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}): ${out}`));
    });
  });
}

/** What a TCP connect to host:50051 comes to within `ms`: 'connected', 'timeout' or the error code. */
function connectOutcome(host: string, ms: number): Promise<string> {
  return new Promise<string>((resolve) => {
    const sock = net.connect({ host, port: 50051, timeout: ms });
    sock.once('connect', () => {
      sock.destroy();
      resolve('connected');
    });
    sock.once('timeout', () => {
      sock.destroy();
      resolve('timeout');
    });
    sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
}

/** connectOutcome run inside a pod's network namespace. */
function connectOutcomeFrom(pod: PodNetwork, host: string, ms: number): string {
  const script =
    `const s = require('net').connect({ host: ${JSON.stringify(host)}, port: 50051, timeout: ${ms} });` +
    `s.once('connect', () => { console.log('connected'); s.destroy(); });` +
    `s.once('timeout', () => { console.log('timeout'); s.destroy(); });` +
    `s.once('error', (e) => console.log(e.code ?? 'error'));`;
  const [file, args] = pod.command(process.execPath, ['-e', script]);
  return execFileSync(file, args, { encoding: 'utf8', timeout: ms + 10_000 }).trim();
}

describe('lab network (netns + veth)', { skip: canRun() }, () => {
  // A /24 of its own, so this test never collides with a lab on the default 10.244.0.0/16.
  const third = 100 + Math.floor(Math.random() * 100);
  const cidr = `10.244.${third}.0/24`;
  const podA = `10.244.${third}.5`;
  const podB = `10.244.${third}.6`;
  const noPod = `10.244.${third}.77`;
  const work = mkdtempSync(join(tmpdir(), 'grpc-kube-netns-test-'));
  const serverFile = join(work, 'server.mjs');
  const servers: ChildProcess[] = [];
  let lab: LabNetwork;
  const ipForwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();

  before(async () => {
    const grpcMain = createRequire(import.meta.url).resolve('@grpc/grpc-js');
    writeFileSync(serverFile, serverSource(pathToFileURL(grpcMain).href));
    lab = await createLabNetwork({ cidr, runDir: join(work, 'run') });
  });
  after(async () => {
    for (const s of servers) s.kill('SIGKILL');
    await lab?.teardown();
    rmSync(work, { recursive: true, force: true });
  });

  it('installs the unreachable route for the CIDR before any pod', () => {
    assert.match(
      ipOut(['route', 'show', cidr]),
      new RegExp(`^unreachable ${cidr.replace(/\./g, '\\.')}`, 'm'),
    );
    assert.equal(lab.pods().length, 0);
  });

  it('refuses a second lab on the same CIDR and addresses outside it', async () => {
    await assert.rejects(
      createLabNetwork({ cidr, runDir: join(work, 'run') }),
      (err: unknown) =>
        err instanceof GrpcKubeError && err.code === 'GK_ERR_LAB' && /already exists/.test(err.message),
    );
    await assert.rejects(createLabNetwork({ cidr: '8.8.0.0/16' }), { code: 'GK_ERR_INVALID_OPTION' });
    await assert.rejects(lab.addPod('10.9.0.5'), { code: 'GK_ERR_INVALID_OPTION' });
    await assert.rejects(lab.addPod(lab.gateway), { code: 'GK_ERR_INVALID_OPTION' });
  });

  it('a grpc-js server in each pod netns answers a host client at its pod IP', async () => {
    for (const ip of [podA, podB]) {
      const pod = await lab.addPod(ip);
      const [file, args] = pod.command(process.execPath, [serverFile, ip, '50051']);
      const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      servers.push(child);
      await waitForLine(child, /listening 50051/, 60_000);
    }
    const Client = grpc.makeGenericClientConstructor(whoAmI, 'Echo');
    for (const ip of [podA, podB]) {
      const client = new Client(`${ip}:50051`, grpc.credentials.createInsecure());
      try {
        const reply = await new Promise<Buffer>((resolve, reject) => {
          (
            client as unknown as {
              whoAmI(
                req: Buffer,
                md: grpc.Metadata,
                o: grpc.CallOptions,
                cb: (e: Error | null, r?: Buffer) => void,
              ): void;
            }
          ).whoAmI(Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (e, r) =>
            e ? reject(e) : resolve(r ?? Buffer.alloc(0)),
          );
        });
        assert.equal(reply.toString(), ip);
      } finally {
        client.close();
      }
    }
  });

  it('the pod netns routes only to the gateway and, through it, the CIDR', () => {
    const pod = lab.pods()[0];
    assert.ok(pod);
    assert.deepEqual(
      ipOut(['-n', pod.netns, 'route', 'show'])
        .trim()
        .split('\n')
        .map((l) => l.trim())
        .sort(),
      [`${cidr} via ${lab.gateway} dev eth0 src ${pod.ip}`, `${lab.gateway} dev eth0 scope link`].sort(),
    );
    // Nothing outside the CIDR: the connect fails in the pod, no packet leaves it.
    assert.equal(connectOutcomeFrom(pod, '192.0.2.1', 30_000), 'ENETUNREACH');
  });

  it('a pod reaches another pod at its pod IP, and the unreachable route from inside a pod', () => {
    const [a, b] = lab.pods();
    assert.ok(a && b);
    assert.equal(connectOutcomeFrom(a, podB, 30_000), 'connected');
    assert.equal(connectOutcomeFrom(b, podA, 30_000), 'connected');
    assert.equal(connectOutcomeFrom(a, noPod, 30_000), 'EHOSTUNREACH');
    // The lab's veths forward; the machine's ip_forward is left as it was.
    assert.equal(readFileSync(`/proc/sys/net/ipv4/conf/${a.hostVeth}/forwarding`, 'utf8').trim(), '1');
    assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), ipForwardBefore);
  });

  it('an address of the CIDR without a pod fails locally with EHOSTUNREACH', async () => {
    assert.equal(await connectOutcome(noPod, 30_000), 'EHOSTUNREACH');
  });

  it('blackholePod drops every packet to and from the pod, silently; the other pod still answers', async () => {
    assert.equal(await connectOutcome(podB, 30_000), 'connected');
    await lab.blackholePod(podB);
    // No RST and no ICMP: the connection attempt just never completes.
    assert.equal(await connectOutcome(podB, 1_500), 'timeout');
    assert.equal(await connectOutcome(podA, 30_000), 'connected');
    // Pod to pod too: the other pod's connect never completes either.
    const a = lab.pods().find((p) => p.ip === podA);
    assert.ok(a);
    assert.equal(connectOutcomeFrom(a, podB, 1_500), 'timeout');
    // The pod's process runs on: only its network is gone.
    assert.ok(servers.every((s) => s.exitCode === null && s.signalCode === null));
    await assert.rejects(lab.blackholePod(noPod), { code: 'GK_ERR_INVALID_OPTION' });
  });

  it('teardown kills pod processes and removes namespaces, links, routes; twice is fine', async () => {
    const names = lab.pods().map((p) => [p.netns, p.hostVeth] as const);
    assert.equal(names.length, 2);
    await lab.teardown();
    await lab.teardown();
    for (const s of servers) {
      if (s.exitCode === null && s.signalCode === null) await new Promise((r) => s.once('exit', r));
    }
    const netnsList = ipOut(['netns', 'list']);
    const links = ipOut(['-o', 'link', 'show']);
    for (const [ns, veth] of names) {
      assert.ok(!netnsList.includes(ns), `${ns} left behind`);
      assert.ok(!links.includes(veth), `${veth} left behind`);
    }
    assert.equal(ipOut(['route', 'show', cidr]).trim(), '');
    assert.ok(!ipOut(['addr', 'show', 'dev', 'lo']).includes(`${lab.gateway}/32`));
    await assert.rejects(lab.addPod(podA), { code: 'GK_ERR_DESTROYED' });
  });
});
