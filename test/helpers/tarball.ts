// The package as a user gets it: `npm pack` of this checkout's built dist (the files package.json
// ships, nothing else) installed from the tarball into a fresh temp project, with npm's cache first
// (`--prefer-offline`; the registry is asked only for what the cache lacks). Packed once per process
// and installed once per grpc-js version, so a test file pays for one pack however many tests use it.

import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The repository root (this file is dist/test/helpers/tarball.js once compiled). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

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
let packed: Promise<Packed> | undefined;
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
 * `npm pack` of the checkout as built (`npm run build` compiled dist/; the `prepare` script that a git
 * install or `npm pack` from a clean clone runs is skipped here, the dist is the same).
 */
export function pack(): Promise<Packed> {
  packed ??= tempDir('gk-pack-').then((dest) => packInto(dest, { prepare: false }));
  return packed;
}

/** `npm pack` into `dest`; with `prepare` the package's own build runs first, as for a publish. */
export async function packInto(dest: string, opts: { prepare: boolean }): Promise<Packed> {
  const flags = opts.prepare ? [] : ['--ignore-scripts'];
  const out = await npm(['pack', ...flags, '--json', '--pack-destination', dest], REPO_ROOT);
  // With prepare, the build's own output precedes the JSON.
  const info = (
    JSON.parse(out.slice(out.indexOf('[\n'))) as Array<{
      filename: string;
      files: { path: string }[];
      unpackedSize: number;
    }>
  )[0];
  if (info === undefined) throw new Error(`npm pack printed no package: ${out}`);
  return {
    tarball: join(dest, info.filename),
    files: info.files.map((f) => f.path),
    unpackedBytes: info.unpackedSize,
  };
}

/** Make `dir` a fresh ES-module project with `tarball` and `@grpc/grpc-js@grpcJs` installed. */
export async function installInto(dir: string, tarball: string, grpcJs: string): Promise<void> {
  await writeFile(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }),
  );
  await npm(['install', '--prefer-offline', tarball, `@grpc/grpc-js@${grpcJs}`], dir);
}

/** A fresh project with the tarball and this @grpc/grpc-js version installed (default: the newest 1.x). */
export function consumer(grpcJs = '^1'): Promise<Consumer> {
  let c = consumers.get(grpcJs);
  if (c === undefined) {
    c = (async () => {
      const { tarball } = await pack();
      const dir = await tempDir('gk-consumer-');
      await installInto(dir, tarball, grpcJs);
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

async function tempDir(prefix: string): Promise<string> {
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
