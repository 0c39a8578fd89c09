// Imported first by the CLI: grpc-js reads this once when it loads, and the lab's headless
// strategies need its dns: resolver to honour a target's DNS-server authority (see cli/lab.ts).
process.env.GRPC_NODE_USE_ALTERNATIVE_RESOLVER ??= 'true';
