// The L7 proxy's public surface: GrpcProxy (sidecar / ingress) and the per-RPC pickers.
export { GrpcProxy, PEER_ID_HEADER, PROXY_CHANNEL_NAME } from './server.js';
export type { GrpcProxyOptions, ProxyMode, ProxyStats, ProxyEvent } from './server.js';
export { createPicker, parseProxyPolicy, PROXY_POLICIES } from './picker.js';
export type { ProxyPicker, ProxyPolicy, PickerRuntime, PickerOptions } from './picker.js';
export type { ProxyRoute, RouteMatch } from './target.js';
export { parseServiceAuthority } from './target.js';
export { NghttpxDataPlane, backendConfig, DEFAULT_NGHTTPX } from './nghttpx.js';
export type { NghttpxDataPlaneOptions } from './nghttpx.js';
