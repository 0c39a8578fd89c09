// The real-cluster backend of the lab: Kubernetes' own etcd, kube-apiserver and
// kube-controller-manager (built by scripts/build-control-plane.sh) plus the network namespaces that
// give pods addresses the apiserver accepts. Import from here, not from the files behind it.

export {
  BUILD_SCRIPT,
  ETCD_VERSION,
  KUBE_VERSION,
  controlPlaneBinDir,
  controlPlaneBinariesPresent,
  findControlPlaneBinaries,
  type ControlPlaneBinaries,
} from './binaries.js';
export {
  DEFAULT_CONTROLLERS,
  kubeConfigYaml,
  startRealControlPlane,
  type LabCredentials,
  type RealControlPlane,
  type RealControlPlaneOptions,
} from './control-plane.js';
export {
  DEFAULT_LAB_CIDR,
  createLabNetwork,
  reapLabNetworks,
  type LabNetwork,
  type LabNetworkOptions,
  type PodNetwork,
} from './netns.js';
export { reapLeftovers } from './processes.js';
export type { LabPki } from './pki.js';
export { realNodeOptions, type RealNodeOptions } from './kubelet.js';
export { NetnsScriptRuntime, netnsWrap, type NetnsScriptRuntimeOptions } from './kubelet-runtime.js';
export { startRealLabCluster, type RealLabCluster, type RealLabClusterOptions } from './cluster.js';
export { installCrds, readCrds, type CrdObject } from './crds.js';
