// Pod runtimes for the real-cluster lab: a pod's process runs inside its own network namespace
// (`ip netns exec <ns> …`; ip execs the command, so the pid we hold — and signal — is the pod's
// process itself). The pod's namespace must exist (LabNetwork.addPod) before start(). netnsWrap() puts
// any ProcessRuntime (ImageRuntime for pod specs as written) there; NetnsScriptRuntime is the lab's
// script runtime so wrapped.

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { NodeScriptRuntime, type PodStartSpec, type ProcessRuntimeOptions } from '../pod-runtime.js';
import type { LabNetwork } from './netns.js';

/** A ProcessRuntime `wrap` that runs each pod in the network namespace of its address. */
export function netnsWrap(network: LabNetwork): NonNullable<ProcessRuntimeOptions['wrap']> {
  return (spec: PodStartSpec, file: string, args: string[]) => {
    const net = network.pods().find((p) => p.ip === spec.ip);
    if (net === undefined) {
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `pod ${spec.namespace}/${spec.name}: no network namespace for ${spec.ip}; call addPod first`,
      );
    }
    return net.command(file, args);
  };
}

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
  constructor(opts: NetnsScriptRuntimeOptions) {
    super({
      script: opts.script,
      ...(opts.env !== undefined ? { env: opts.env } : {}),
      ...(opts.onOutput !== undefined ? { onOutput: opts.onOutput } : {}),
      ...(opts.nice !== undefined ? { nice: opts.nice } : {}),
      ...(opts.shellCommand !== undefined ? { shellCommand: opts.shellCommand } : {}),
      wrap: netnsWrap(opts.network),
    });
  }
}
