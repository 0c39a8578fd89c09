// A PodRuntime for the real-cluster lab: a Node.js script run inside the pod's own network namespace
// (`ip netns exec <ns> node <script>`; ip execs the command, so the pid we hold — and signal — is the
// node process itself). The pod's namespace must exist (LabNetwork.addPod) before start(). Like
// NodeScriptRuntime (which it extends, wrapping only the command), children die with this process.

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { NodeScriptRuntime, type PodStartSpec } from '../pod-runtime.js';
import type { LabNetwork } from './netns.js';

export interface NetnsScriptRuntimeOptions {
  readonly network: LabNetwork;
  /** JavaScript file run with this Node.js binary, e.g. POD_MAIN_SCRIPT of src/lab/pod-main.ts. */
  readonly script: string;
  /** Extra environment for every pod (the container's env wins). */
  readonly env?: Readonly<Record<string, string>>;
  readonly onOutput?: (pod: string, stream: 'stdout' | 'stderr', line: string) => void;
  /** CPU niceness of the pods (see NodeScriptRuntimeOptions.nice). */
  readonly nice?: number;
  /** A shell command instead of the script (see NodeScriptRuntimeOptions.shellCommand). */
  readonly shellCommand?: string;
}

export class NetnsScriptRuntime extends NodeScriptRuntime {
  private readonly network: LabNetwork;

  constructor(opts: NetnsScriptRuntimeOptions) {
    super({
      script: opts.script,
      ...(opts.env !== undefined ? { env: opts.env } : {}),
      ...(opts.onOutput !== undefined ? { onOutput: opts.onOutput } : {}),
      ...(opts.nice !== undefined ? { nice: opts.nice } : {}),
      ...(opts.shellCommand !== undefined ? { shellCommand: opts.shellCommand } : {}),
    });
    this.network = opts.network;
  }

  protected override command(spec: PodStartSpec): readonly [string, string[]] {
    const net = this.network.pods().find((p) => p.ip === spec.ip);
    if (net === undefined) {
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `pod ${spec.namespace}/${spec.name}: no network namespace for ${spec.ip}; call addPod first`,
      );
    }
    return net.command(...super.command(spec));
  }
}
