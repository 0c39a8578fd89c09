// The server kit's public surface.
export {
  createServerKit,
  createServerKit as serveWithKit,
  maxConnectionAgeOptions,
  SERVER_CHANNEL_NAME,
  SERVER_KIT_DEFAULTS,
  type DelayFn,
  type MaxConnectionAgeOptions,
  type ServerKit,
  type ServerKitEvent,
  type ServerKitOptions,
  type ServerPhase,
  type ShutdownResult,
  type SignalSource,
} from './kit.js';
