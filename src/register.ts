// Side-effect entry point: `import 'grpc-kube/register'` registers the resolvers with defaults
// (KUBECONFIG, ~/.kube/config, else the pod's ServiceAccount; round_robin) and the grpc_kube_p2c /
// grpc_kube_ewma policies a service config may name. It imports only those two parts, not the root
// index (server kit, client defaults), so a process pays for what it registers.
import './balancer/index.js';
import { setup } from './resolver/setup.js';

setup();
