// Side-effect entry point: `import 'grpc-kube/register'` registers the resolvers with defaults
// (in-cluster credentials, else KUBECONFIG; round_robin).
import { setup } from './index.js';

setup();
