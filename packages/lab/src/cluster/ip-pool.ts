// Pod addresses of the lab kubelet: a pool handing out IPv4 addresses from a first one upwards (the
// embedded cluster's 127.B.2.x, the real cluster's lab CIDR).

import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface IpAllocator {
  allocate(): string;
  release(ip: string): void;
}

function ipToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new InvalidOptionError('ipPool.first', `must be a dotted IPv4 address, got "${ip}"`);
  }
  return (((parts[0] ?? 0) << 24) | ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0)) >>> 0;
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * Hands out addresses from `first` upwards, skipping .0 and .255 in the last octet. Released addresses
 * are reused oldest-released first and only once the fresh ones run out, so a client that still holds
 * a dead pod's address does not reach its successor by accident.
 */
export class IpPool implements IpAllocator {
  private readonly first: number;
  private readonly count: number;
  private next = 0;
  private readonly free: string[] = [];
  private readonly used = new Set<string>();

  constructor(opts: { first?: string; count?: number } = {}) {
    this.first = ipToInt(opts.first ?? '127.0.2.1');
    this.count = opts.count ?? 250 * 64;
    if (!Number.isInteger(this.count) || this.count < 1) {
      throw new InvalidOptionError('ipPool.count', `must be a positive integer, got ${this.count}`);
    }
  }

  allocate(): string {
    while (this.next < this.count) {
      const ip = intToIp((this.first + this.next++) >>> 0);
      const last = Number(ip.slice(ip.lastIndexOf('.') + 1));
      if (last !== 0 && last !== 255 && !this.used.has(ip)) {
        this.used.add(ip);
        return ip;
      }
    }
    const ip = this.free.shift();
    if (ip === undefined)
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `pod IP pool exhausted (${this.count} addresses); stop some pods or give a larger pool`,
      );
    this.used.add(ip);
    return ip;
  }

  release(ip: string): void {
    if (this.used.delete(ip)) this.free.push(ip);
  }
}
