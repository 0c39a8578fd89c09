// Metrics through @opentelemetry/api (docs/metrics.md): the instrument table, gRFC A66 call metrics
// for grpc-js clients and servers.

export { INSTRUMENTS, type InstrumentName, type InstrumentSpec } from './instruments.js';
export {
  clientCallMetrics,
  serverCallMetrics,
  grpcStatusName,
  type ClientCallMetricsOptions,
} from './calls.js';
