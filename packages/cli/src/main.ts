#!/usr/bin/env node
// The grpc-kube command: `resolve` (watch a target's endpoints) and `lab` (the scenario lab).
// Each subcommand lives in its own module; this file parses arguments and maps errors to exit codes.

import './env.js';
import { GrpcKubeError, missingPackage } from 'grpc-kube/internal/errors.js';
import { parseCommandLine, RESOLVE_FLAGS, usageOf } from './options.js';
import { resolveCommand } from './resolve.js';

const USAGE = `usage:
  grpc-kube resolve <target> [--kubeconfig FILE] [--context NAME] [--once]
      print the live endpoint set of kubernetes:///svc.ns:port or dns-poll:///host:port and every change
  grpc-kube lab [--scenario NAME,...] [--strategy NAME,...] [--quick] [--json FILE] [--report FILE.html] [--seed N]
                [--pods kit|plain|naive] [--client-defaults [--idempotent] [--hedge MS]] [--clients N] [--pacing MS] [--cluster embedded|real]
                [--assert "SCENARIO/STRATEGY:FIGURE<OP>NUMBER" ...] [--pod-command "CMD"] [--pod-nice N]
                [--metrics FILE] [--metrics-address HOST:PORT] [--tls] [--manifests]
      run the lab's scenarios against each strategy on an embedded cluster and report; --assert makes it
      a CI gate (exit 1 when one fails, 2 when one is malformed); --pod-command runs your own gRPC server
      as the pods (env PORT, POD_IP, POD_NAME; readiness from grpc.health.v1)
  grpc-kube xds serve|bootstrap|status … the xDS control plane, its clients' bootstrap, what they hold
                                         (grpc-kube xds serve --help)
  grpc-kube proxy --mode sidecar|ingress ... [--workers N] [--data-plane node|nghttpx]
      per-RPC gRPC proxy for clients that cannot embed grpc-kube (grpc-kube proxy --help)
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  // Every flag of `lab` and `resolve`, from the tables their parsers use (xds and proxy print theirs).
  if ((cmd === 'lab' || cmd === 'resolve') && (rest.includes('--help') || rest.includes('-h'))) {
    process.stdout.write(`${usageOf(cmd)}\n`);
    return 0;
  }
  if (cmd === 'resolve') {
    const { values, positionals } = parseCommandLine(RESOLVE_FLAGS, rest, { positionals: true });
    const target = positionals[0];
    if (target === undefined) {
      process.stderr.write(USAGE);
      return 2;
    }
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    return resolveCommand({
      target,
      kubeconfig: values.kubeconfig,
      context: values.context,
      once: values.once ?? false,
      signal: ac.signal,
    });
  }
  if (cmd === 'xds') {
    const { xdsCommand } = await subcommand('@grpc-kube/xds', 'grpc-kube xds', () => import('./xds.js'));
    return xdsCommand(rest);
  }
  if (cmd === 'proxy') {
    const { proxyCommand } = await subcommand(
      '@grpc-kube/proxy',
      'grpc-kube proxy',
      () => import('./proxy.js'),
    );
    return proxyCommand(rest);
  }
  if (cmd === 'lab') {
    const { labCommand } = await subcommand('@grpc-kube/lab', 'grpc-kube lab', () => import('./lab.js'));
    try {
      return await labCommand(rest);
    } finally {
      // The lab has cleaned up: the process must end now, not when a stray handle lets it (lab-exit.ts).
      (await import('./lab-exit.js')).exitWhenStuck();
    }
  }
  process.stderr.write(USAGE);
  return cmd === undefined || cmd === 'help' || cmd === '--help' ? 0 : 2;
}

/**
 * A subcommand's module, loaded when it runs; its package is an optional peer of the CLI, and when it
 * is not installed the command says which one to install.
 */
async function subcommand<T>(pkg: string, feature: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    if (e.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes(`'${pkg}'`))
      throw missingPackage(pkg, feature, err);
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      // An unknown flag or a stray argument: say which, then how the command is used.
      process.stderr.write(`grpc-kube: ${(err as Error).message}\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    if (err instanceof GrpcKubeError) process.stderr.write(`grpc-kube: ${err.code}: ${err.message}\n`);
    else
      process.stderr.write(`grpc-kube: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    // A command line that cannot mean anything is a usage error (2), as an unknown flag is; 1 is for
    // what went wrong while running.
    process.exitCode = code === 'GK_ERR_INVALID_OPTION' || code === 'GK_ERR_INVALID_ASSERTION' ? 2 : 1;
  },
);
