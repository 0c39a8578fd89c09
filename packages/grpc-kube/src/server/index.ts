// The server kit's public surface.
export {
  createServerKit,
  createServerKit as serveWithKit,
  maxConnectionAgeOptions,
  serverTlsCredentials,
  SERVER_CHANNEL_NAME,
  SERVER_KIT_DEFAULTS,
  type DelayFn,
  type MaxConnectionAgeOptions,
  type ServerKit,
  type ServerKitEvent,
  type ServerKitOptions,
  type ServerPhase,
  type ServerTls,
  type ShutdownResult,
  type SignalSource,
} from './kit.js';
export { TlsError, TlsFiles, type TlsFilesOptions } from '../tls/files.js';
