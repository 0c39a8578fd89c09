// Side-effect entry point: `import 'grpc-kube/register'` registers the resolvers with defaults
// (KUBECONFIG, ~/.kube/config, else the pod's ServiceAccount; round_robin). It imports only the
// resolver path, not the root index (server kit, client defaults): start-up costs about what grpc-js
// costs (`npm run bench -- startup`). The grpc_kube_p2c / grpc_kube_ewma policies a service config
// may name are imported with the first kubernetes: or dns-poll: channel, whose first resolution waits
// for them; import 'grpc-kube' (or call its registerPolicies()) for them at start-up.
import { loadPoliciesWithFirstChannel, setup } from './resolver/setup.js';

loadPoliciesWithFirstChannel(() => import('./balancer/index.js'));
setup();
