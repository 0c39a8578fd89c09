// `npm run bench -- startup`: what the core costs a process that imports it (docs/figures.md).
// Every package is packed as for a publish (`npm pack -w`, which runs each one's prepack build) and the
// core's tarball alone is installed into a fresh project, so the figures are those of what a user of
// the resolver installs.
//  - importRegisterMs: `await import('grpc-kube/register')` in a fresh node process (it loads
//    @grpc/grpc-js too), median of RUNS processes.
//  - grpcJsImportMs: `await import('@grpc/grpc-js')` alone, the same way; the two alternate, so
//    both see the same machine load.
//  - importRatio: importRegisterMs / grpcJsImportMs (goal <= 1.5). The same three as CPU time
//    (user + system of the process, *CpuMs, importRatioCpu), which a loaded machine disturbs less.
//  - coreInstallBytes: the bytes on disk of everything npm installed for the core package grpc-kube
//    (the package and its dependencies), @grpc/grpc-js (the user's own peer) excluded;
//    grpcJsInstallBytes beside it.
//  - coreTarballFiles: files in the core's tarball; packageBytes: its own unpacked size;
//    tarballFiles: the files of every package's tarball, by name.

import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { installInto, packInto } from '../test/helpers/tarball.js';

const run = promisify(execFile);
const RUNS = 9;

function log(line: string): void {
  process.stderr.write(line + '\n');
}

/** Wall and CPU (user + system, all threads) milliseconds of one import in a fresh process. */
async function importMs(dir: string, specifier: string): Promise<{ wall: number; cpu: number }> {
  const code =
    'const c = process.cpuUsage(); const t = performance.now(); ' +
    `await import(${JSON.stringify(specifier)}); ` +
    'const u = process.cpuUsage(c); console.log(performance.now() - t, (u.user + u.system) / 1000);';
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', code], { cwd: dir });
  const [wall = NaN, cpu = NaN] = stdout.trim().split(' ').map(Number);
  return { wall, cpu };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** Bytes of the files under `path` (symbolic links counted as links, not followed). */
async function diskBytes(path: string): Promise<number> {
  const st = await lstat(path);
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const e of await readdir(path)) total += await diskBytes(join(path, e));
  return total;
}

/** Installed packages of node_modules, by name, with their bytes (nested node_modules included). */
async function packageSizes(modules: string): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const e of await readdir(modules)) {
    if (e.startsWith('.')) continue;
    const names = e.startsWith('@') ? (await readdir(join(modules, e))).map((n) => `${e}/${n}`) : [e];
    for (const n of names) sizes.set(n, await diskBytes(join(modules, n)));
  }
  return sizes;
}

export async function runStartupBench(): Promise<Record<string, unknown>> {
  const root = await mkdtemp(join(tmpdir(), 'gk-bench-startup-'));
  try {
    log('packing every package (npm pack -w runs each prepack build) ...');
    const set = await packInto(root, { prepare: true });
    const packed = set['grpc-kube'];
    if (packed === undefined) throw new Error('npm pack made no grpc-kube tarball');
    const dir = join(root, 'consumer');
    await mkdir(dir);
    log(`installing ${packed.tarball} into a fresh project ...`);
    await installInto(dir, [packed.tarball], '^1');
    // One untimed import of each first: the page cache, not the code, decides a first cold read.
    await importMs(dir, 'grpc-kube/register');
    await importMs(dir, '@grpc/grpc-js');
    const register: Array<{ wall: number; cpu: number }> = [];
    const grpcJs: Array<{ wall: number; cpu: number }> = [];
    for (let i = 0; i < RUNS; i++) {
      register.push(await importMs(dir, 'grpc-kube/register'));
      grpcJs.push(await importMs(dir, '@grpc/grpc-js'));
    }
    const show = (xs: Array<{ wall: number; cpu: number }>): string =>
      xs.map((x) => `${x.wall.toFixed(1)}/${x.cpu.toFixed(1)}`).join(' ');
    log(`register ms (wall/cpu): ${show(register)}`);
    log(`grpc-js  ms (wall/cpu): ${show(grpcJs)}`);
    const sizes = await packageSizes(join(dir, 'node_modules'));
    const grpcJsInstallBytes = sizes.get('@grpc/grpc-js') ?? 0;
    // grpc-js's own dependencies are shared with ours; only the peer itself is the user's.
    sizes.delete('@grpc/grpc-js');
    const coreInstallBytes = [...sizes.values()].reduce((a, b) => a + b, 0);
    const largest = [...sizes].sort((a, b) => b[1] - a[1]).slice(0, 6);
    log(`largest installed: ${largest.map(([n, b]) => `${n} ${(b / 1e6).toFixed(1)} MB`).join(', ')}`);
    const importRegisterMs = median(register.map((x) => x.wall));
    const grpcJsImportMs = median(grpcJs.map((x) => x.wall));
    const registerCpuMs = median(register.map((x) => x.cpu));
    const grpcJsCpuMs = median(grpcJs.map((x) => x.cpu));
    return {
      bench: 'startup',
      importRegisterMs: Number(importRegisterMs.toFixed(1)),
      grpcJsImportMs: Number(grpcJsImportMs.toFixed(1)),
      importRatio: Number((importRegisterMs / grpcJsImportMs).toFixed(2)),
      importRegisterCpuMs: Number(registerCpuMs.toFixed(1)),
      grpcJsImportCpuMs: Number(grpcJsCpuMs.toFixed(1)),
      importRatioCpu: Number((registerCpuMs / grpcJsCpuMs).toFixed(2)),
      runs: RUNS,
      coreInstallBytes,
      grpcJsInstallBytes,
      coreTarballFiles: packed.files.length,
      packageBytes: packed.unpackedBytes,
      tarballFiles: Object.fromEntries(Object.entries(set).map(([name, p]) => [name, p.files.length])),
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
