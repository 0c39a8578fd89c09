// Client-side public surface: safe channel options for Kubernetes services.
export {
  clientDefaults,
  defaultServiceConfig,
  CLIENT_DEFAULTS,
  type ClientDefaultsOptions,
  type MethodName,
  type RetryOptions,
  type ServiceConfigJson,
  type StatusCodeName,
} from './defaults.js';
