// The packages as a user gets them: `npm pack -w` of every workspace package of this checkout as built
// (each one's dist, the files its package.json ships, nothing else), the tarballs installed into a
// fresh temp project, with npm's cache first (`--prefer-offline`; the registry is asked only for what
// the cache lacks). Packed once per process and installed once per grpc-js version, so a test file
// pays for one pack however many tests use it.

import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The repository root (this file is dist/test/helpers/tarball.js once compiled). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Our packages, by name, in the root package.json's `workspaces` order (the core first). */
export const PACKAGES: readonly string[] = (
  JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { workspaces: string[] }
).workspaces.map(
  (w) => (JSON.parse(readFileSync(join(REPO_ROOT, w, 'package.json'), 'utf8')) as { name: string }).name,
);

export interface Packed {
  readonly tarball: string;
  /** Paths inside the tarball, without the leading `package/`. */
  readonly files: readonly string[];
  readonly unpackedBytes: number;
}

export interface Consumer {
  readonly dir: string;
  /** Run `node args…` in the project. */
  node(args: string[], env?: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }>;
}

const dirs: string[] = [];
/** Each package's tarball, by package name. */
export type PackedSet = Readonly<Record<string, Packed>>;

let packed: Promise<PackedSet> | undefined;
const consumers = new Map<string, Promise<Consumer>>();

async function npm(args: string[], cwd: string): Promise<string> {
  const { stdout } = await run('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd,
    maxBuffer: 64 * 1024 * 1024,
    // Under `npm run`, npm_config_local_prefix & co. name this checkout; the consumer must not see them.
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_'))),
  });
  return stdout;
}

/**
 * `npm pack` of every package as built (`npm run build` compiled each dist/; the `prepack` build that
 * a publish runs is skipped here, the dist is the same).
 */
export function pack(): Promise<PackedSet> {
  packed ??= tempDir('gk-pack-').then((dest) => packInto(dest, { prepare: false }));
  return packed;
}

/** `npm pack -w` of every package into `dest`; with `prepare` each one's `prepack` build runs first. */
export async function packInto(dest: string, opts: { prepare: boolean }): Promise<PackedSet> {
  const flags = opts.prepare ? [] : ['--ignore-scripts'];
  const workspaces = PACKAGES.flatMap((name) => ['-w', name]);
  const out = await npm(['pack', ...flags, ...workspaces, '--json', '--pack-destination', dest], REPO_ROOT);
  // With prepack, the builds' own output precedes the JSON.
  const infos = JSON.parse(out.slice(out.indexOf('[\n'))) as Array<{
    name: string;
    filename: string;
    files: { path: string }[];
    unpackedSize: number;
  }>;
  const set: Record<string, Packed> = {};
  for (const info of infos)
    set[info.name] = {
      tarball: join(dest, info.filename),
      files: info.files.map((f) => f.path),
      unpackedBytes: info.unpackedSize,
    };
  const missing = PACKAGES.filter((name) => set[name] === undefined);
  if (missing.length > 0) throw new Error(`npm pack printed no ${missing.join(', ')}: ${out}`);
  return set;
}

/** Make `dir` a fresh ES-module project with `tarballs` and `@grpc/grpc-js@grpcJs` installed. */
export async function installInto(dir: string, tarballs: readonly string[], grpcJs: string): Promise<void> {
  await writeFile(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }),
  );
  await npm(['install', '--prefer-offline', ...tarballs, `@grpc/grpc-js@${grpcJs}`], dir);
}

/** A fresh project with every tarball and this @grpc/grpc-js version installed (default: the newest 1.x). */
export function consumer(grpcJs = '^1'): Promise<Consumer> {
  let c = consumers.get(grpcJs);
  if (c === undefined) {
    c = (async () => {
      const set = await pack();
      const dir = await tempDir('gk-consumer-');
      await installInto(
        dir,
        Object.values(set).map((p) => p.tarball),
        grpcJs,
      );
      return {
        dir,
        node: (args, env = process.env) =>
          run(process.execPath, args, { cwd: dir, env, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }),
      };
    })();
    consumers.set(grpcJs, c);
  }
  return c;
}

/** A temp directory that removePacked() removes. */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

/** Remove every packed tarball and consumer project of this process (call from an `after` hook). */
export async function removePacked(): Promise<void> {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  packed = undefined;
  consumers.clear();
}
