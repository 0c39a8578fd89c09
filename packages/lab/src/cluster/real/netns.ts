// Pod IPs for the real-cluster lab. kube-apiserver refuses loopback and link-local addresses in
// EndpointSlices, so each pod gets an address from a private lab CIDR, living in its own network
// namespace joined to the host by a veth pair. Containment comes first: `unreachable <cidr>` is
// installed before any namespace exists, so a packet for a lab address that has no pod fails locally
// and can never leave the machine; pods get no default route, only a link route to the host gateway
// (an address of the CIDR on `lo`) and the CIDR via that gateway, so they reach the host and each
// other and nothing else. Pod to pod goes through the host as on a Kubernetes node (routed, no
// bridge): forwarding is turned on for the lab's host veths only (the `forwarding` of each, not the
// machine's ip_forward), so only packets a pod sent are forwarded, and a pod has routes into the
// CIDR alone — to another pod's /32 route, or to the unreachable route. Needs root.
//
// Layout per pod (ip 10.244.0.5, lab id ab12):
//   netns gk-ab12-10.244.0.5: eth0 10.244.0.5/32, lo up, route <gateway> dev eth0 scope link,
//                             route <cidr> via <gateway> dev eth0 src 10.244.0.5
//   host: veth gkab120af40005 up, forwarding 1, route 10.244.0.5/32 dev gkab120af40005 src <gateway>

import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { onProcessExit } from './processes.js';

export const DEFAULT_LAB_CIDR = '10.244.0.0/16';

export interface LabNetworkOptions {
  /** Private IPv4 CIDR (10/8, 172.16/12 or 192.168/16), prefix 8..28. Default 10.244.0.0/16. */
  readonly cidr?: string;
  /** Where the crash-cleanup record goes. Default `${GRPC_KUBE_CACHE:-~/.cache/grpc-kube}/run`. */
  readonly runDir?: string;
}

export interface PodNetwork {
  readonly ip: string;
  readonly netns: string;
  readonly hostVeth: string;
  /** `[file, args]` that run `command` inside the pod's namespace (for child_process.spawn). */
  command(command: string, args: readonly string[]): [string, string[]];
}

export interface LabNetwork {
  readonly cidr: string;
  /** The host's address inside the CIDR (last usable one): the source of host → pod traffic. */
  readonly gateway: string;
  /** Addresses with a pod namespace, in creation order. */
  pods(): readonly PodNetwork[];
  addPod(ip: string): Promise<PodNetwork>;
  /** Kills whatever still runs in the namespace, then removes it, its veth pair and route. */
  removePod(ip: string): Promise<void>;
  /**
   * Drops every packet to and from the pod, silently (no RST, no ICMP): a pfifo of length 0 as the
   * root qdisc of both ends of its veth pair, so the pod's answers, ACKs and SYN-ACKs and everything
   * sent to it are tail-dropped. Needs only iproute2's tc (no netem, no netfilter). Lasts until the
   * pod is removed.
   */
  blackholePod(ip: string): Promise<void>;
  /** Removes every pod, the gateway address and (last) the unreachable route. Idempotent. */
  teardown(): Promise<void>;
}

// ---- addresses ---------------------------------------------------------------------------------

function parseIpv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const o = m.slice(1, 5).map(Number);
  if (o.some((x) => x > 255) || m.slice(1, 5).some((x) => x.length > 1 && x.startsWith('0')))
    return undefined;
  return (((o[0] ?? 0) << 24) | ((o[1] ?? 0) << 16) | ((o[2] ?? 0) << 8) | (o[3] ?? 0)) >>> 0;
}

function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

interface Cidr {
  readonly text: string;
  readonly base: number;
  readonly bits: number;
  readonly last: number;
}

const PRIVATE: readonly [number, number][] = [
  [parseIpv4('10.0.0.0') ?? 0, 8],
  [parseIpv4('172.16.0.0') ?? 0, 12],
  [parseIpv4('192.168.0.0') ?? 0, 16],
];

function maskOf(bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

function parseCidr(text: string): Cidr {
  const [addr, bitsText, extra] = text.split('/');
  const base = addr === undefined ? undefined : parseIpv4(addr);
  const bits = Number(bitsText);
  const bad = (why: string): never => {
    throw new InvalidOptionError('cidr', `${why}, got "${text}"`);
  };
  if (base === undefined || extra !== undefined || !/^\d{1,2}$/.test(bitsText ?? '')) {
    return bad('must be an IPv4 CIDR like 10.244.0.0/16');
  }
  if (bits < 8 || bits > 28) return bad('prefix length must be 8..28');
  if ((base & maskOf(bits)) >>> 0 !== base) return bad('has host bits set');
  // Only private ranges: the unreachable route must never shadow an address on the internet.
  const inPrivate = PRIVATE.some(([p, pb]) => pb <= bits && (base & maskOf(pb)) >>> 0 === p);
  if (!inPrivate) return bad('must lie inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16');
  return { text, base, bits, last: (base | (~maskOf(bits) >>> 0)) >>> 0 };
}

// ---- ip(8) -------------------------------------------------------------------------------------

function ip(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err === null) resolve(stdout);
      else
        reject(
          Object.assign(
            new GrpcKubeError('GK_ERR_LAB', `ip ${args.join(' ')} failed: ${stderr.trim() || err.message}`, {
              cause: err,
            }),
            { stderr: String(stderr) },
          ),
        );
    });
  });
}

function tc(args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('tc', args, { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err === null) resolve();
      else
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `tc ${args.join(' ')} failed: ${stderr.trim() || err.message} (tc is in Debian's iproute2)`,
            { cause: err },
          ),
        );
    });
  });
}

/** tc arguments that make `dev`'s egress drop every packet: a FIFO that holds none. */
export function dropAllQdisc(dev: string): string[] {
  return ['qdisc', 'replace', 'dev', dev, 'root', 'pfifo', 'limit', '0'];
}

function ipSync(args: readonly string[]): void {
  try {
    execFileSync('ip', args, { stdio: 'ignore', timeout: 10_000 });
  } catch {
    // best effort during exit; the next start's reaper retries
  }
}

function killNetnsPidsSync(netns: string): void {
  let out = '';
  try {
    out = execFileSync('ip', ['netns', 'pids', netns], { encoding: 'utf8', timeout: 10_000 });
  } catch {
    return;
  }
  for (const pid of out.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

// ---- crash records -----------------------------------------------------------------------------

interface NetRecord {
  ownerPid: number;
  id: string;
  cidr: string;
  gateway: string;
  pods: { ip: string; netns: string; hostVeth: string }[];
}

function defaultRunDir(): string {
  return join(process.env['GRPC_KUBE_CACHE'] || join(homedir(), '.cache', 'grpc-kube'), 'run');
}

/** Synchronous teardown from a record: used by exit hooks and by the reaper. */
function teardownSync(rec: NetRecord): void {
  for (const p of rec.pods) {
    killNetnsPidsSync(p.netns);
    ipSync(['netns', 'del', p.netns]);
    ipSync(['link', 'del', p.hostVeth]);
  }
  ipSync(['addr', 'del', `${rec.gateway}/32`, 'dev', 'lo']);
  ipSync(['route', 'del', 'unreachable', rec.cidr]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Tears down lab networks whose owner process died without doing it. Returns how many. */
export function reapLabNetworks(runDir: string = defaultRunDir()): number {
  let names: string[];
  try {
    names = readdirSync(runDir);
  } catch {
    return 0;
  }
  let reaped = 0;
  for (const name of names) {
    if (!name.startsWith('netns-') || !name.endsWith('.json')) continue;
    const path = join(runDir, name);
    let rec: NetRecord;
    try {
      rec = JSON.parse(readFileSync(path, 'utf8')) as NetRecord;
    } catch {
      rmSync(path, { force: true });
      continue;
    }
    if (rec.ownerPid === process.pid || alive(rec.ownerPid)) continue;
    teardownSync(rec);
    rmSync(path, { force: true });
    reaped++;
  }
  return reaped;
}

// ---- the lab network ---------------------------------------------------------------------------

/**
 * Installs `unreachable <cidr>` and the host gateway address, and returns a handle to add pods.
 * Throws GK_ERR_LAB without root, without iproute2, or when another live lab holds the CIDR.
 */
export async function createLabNetwork(opts: LabNetworkOptions = {}): Promise<LabNetwork> {
  const cidr = parseCidr(opts.cidr ?? DEFAULT_LAB_CIDR);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new GrpcKubeError(
      'GK_ERR_LAB',
      'the real-cluster lab network needs root (network namespaces, veth pairs, routes); ' +
        'run as root or use the embedded cluster (--cluster embedded)',
    );
  }
  const runDir = opts.runDir ?? defaultRunDir();
  mkdirSync(runDir, { recursive: true });
  reapLabNetworks(runDir);

  const gateway = formatIpv4(cidr.last - 1);
  const id = randomBytes(2).toString('hex');
  const rec: NetRecord = { ownerPid: process.pid, id, cidr: cidr.text, gateway, pods: [] };
  const recPath = join(runDir, `netns-${process.pid}-${id}.json`);
  const save = (): void => writeFileSync(recPath, JSON.stringify(rec));

  try {
    await ip(['route', 'add', 'unreachable', cidr.text]);
  } catch (err) {
    const exists = /File exists/i.test((err as { stderr?: string }).stderr ?? '');
    throw new GrpcKubeError(
      'GK_ERR_LAB',
      exists
        ? `a route for ${cidr.text} already exists (another lab network, or a route of this machine): ` +
            'tear that lab down or choose another cidr'
        : (err as Error).message,
      { cause: err },
    );
  }
  save();
  const unregister = onProcessExit(() => {
    teardownSync(rec);
    rmSync(recPath, { force: true });
  });
  const pods = new Map<string, PodNetwork>();
  let tearingDown: Promise<void> | undefined;

  try {
    await ip(['addr', 'add', `${gateway}/32`, 'dev', 'lo']);
  } catch (err) {
    teardownSync(rec);
    rmSync(recPath, { force: true });
    unregister();
    throw err;
  }

  const removePod = async (podIp: string): Promise<void> => {
    const pod = pods.get(podIp);
    if (pod === undefined) return;
    pods.delete(podIp);
    // Processes left in the namespace would keep it (and its veth) alive after `netns del`.
    killNetnsPidsSync(pod.netns);
    await ip(['netns', 'del', pod.netns]).catch(() => undefined);
    await ip(['link', 'del', pod.hostVeth]).catch(() => undefined); // normally gone with its peer
    rec.pods = rec.pods.filter((p) => p.ip !== podIp);
    save();
  };

  return {
    cidr: cidr.text,
    gateway,
    pods: () => [...pods.values()],
    async addPod(podIp: string): Promise<PodNetwork> {
      if (tearingDown) throw new GrpcKubeError('GK_ERR_DESTROYED', 'addPod() after teardown()');
      const n = parseIpv4(podIp);
      if (n === undefined || (n & maskOf(cidr.bits)) >>> 0 !== cidr.base) {
        throw new InvalidOptionError('ip', `must be an IPv4 address inside ${cidr.text}, got "${podIp}"`);
      }
      if (n === cidr.base || n >= cidr.last - 1) {
        throw new InvalidOptionError(
          'ip',
          `${podIp} is the network, gateway or broadcast address of ${cidr.text}`,
        );
      }
      if (pods.has(podIp)) throw new InvalidOptionError('ip', `${podIp} already has a pod network`);
      const hex = n.toString(16).padStart(8, '0');
      const netns = `gk-${id}-${podIp}`;
      const hostVeth = `gk${id}${hex}`;
      const peer = `gp${id}${hex}`;
      const pod: PodNetwork = {
        ip: podIp,
        netns,
        hostVeth,
        command: (command, args) => ['ip', ['netns', 'exec', netns, command, ...args]],
      };
      // Record first so a crash half-way is still cleaned up.
      rec.pods.push({ ip: podIp, netns, hostVeth });
      pods.set(podIp, pod);
      save();
      try {
        await ip(['netns', 'add', netns]);
        await ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', peer, 'netns', netns]);
        await ip(['-n', netns, 'link', 'set', peer, 'name', 'eth0']);
        await ip(['-n', netns, 'addr', 'add', `${podIp}/32`, 'dev', 'eth0']);
        await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
        await ip(['-n', netns, 'link', 'set', 'eth0', 'up']);
        // No default route: the pod can reach the host gateway and, through it, the CIDR.
        await ip(['-n', netns, 'route', 'add', `${gateway}/32`, 'dev', 'eth0', 'scope', 'link']);
        await ip(['-n', netns, 'route', 'add', cidr.text, 'via', gateway, 'dev', 'eth0', 'src', podIp]);
        // What this pod sends to another pod is forwarded by the host (this veth only).
        writeFileSync(`/proc/sys/net/ipv4/conf/${hostVeth}/forwarding`, '1');
        await ip(['link', 'set', hostVeth, 'up']);
        await ip(['route', 'add', `${podIp}/32`, 'dev', hostVeth, 'src', gateway]);
      } catch (err) {
        await removePod(podIp);
        throw err;
      }
      return pod;
    },
    removePod,
    async blackholePod(podIp: string): Promise<void> {
      const pod = pods.get(podIp);
      if (pod === undefined) throw new InvalidOptionError('ip', `${podIp} has no pod network`);
      await tc(['-n', pod.netns, ...dropAllQdisc('eth0')]);
      await tc(dropAllQdisc(pod.hostVeth));
    },
    teardown(): Promise<void> {
      tearingDown ??= (async () => {
        for (const p of [...pods.keys()]) await removePod(p);
        await ip(['addr', 'del', `${gateway}/32`, 'dev', 'lo']).catch(() => undefined);
        // Last: until every pod route is gone, the unreachable route keeps the CIDR contained.
        await ip(['route', 'del', 'unreachable', cidr.text]).catch(() => undefined);
        rmSync(recPath, { force: true });
        unregister();
      })();
      return tearingDown;
    },
  };
}
