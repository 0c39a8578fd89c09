// The CLI's metrics: `--metrics-address HOST:PORT` serves every instrument (docs/metrics.md) in
// Prometheus text at /metrics, and `lab --metrics FILE` writes them at the end of a run. Both install
// an OpenTelemetry SDK MeterProvider as the global one; the SDK and the Prometheus exporter are
// loaded only when one of the flags is given.

import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface MetricsEndpoint {
  /** host:port the /metrics server listens on, when it serves one. */
  readonly address: string | undefined;
  /** Every metric now, in Prometheus text. */
  text(): Promise<string>;
  /** Stop serving and unset the global MeterProvider. Idempotent. */
  close(): Promise<void>;
}

function hostPort(text: string, field: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  const port = Number(m?.[2]);
  if (m === null || port > 65535)
    throw new InvalidOptionError(field, `must be HOST:PORT (port 0 picks one), got "${text}"`);
  return { host: m[1] as string, port };
}

/**
 * Install a MeterProvider read by a Prometheus exporter; with `address`, serve it at /metrics.
 * Returns undefined when neither a server nor the text is wanted.
 */
export async function startMetrics(
  address: string | undefined,
  opts: { wantText?: boolean; field?: string; collectEveryMs?: number } = {},
): Promise<MetricsEndpoint | undefined> {
  if (address === undefined && opts.wantText !== true) return undefined;
  const listen = address === undefined ? undefined : hostPort(address, opts.field ?? '--metrics-address');
  const [{ metrics }, { MeterProvider }, { PrometheusExporter, PrometheusSerializer }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-metrics'),
    import('@opentelemetry/exporter-prometheus'),
  ]);
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({ readers: [exporter] });
  metrics.setGlobalMeterProvider(provider);
  let server: http.Server | undefined;
  let bound: string | undefined;
  if (listen !== undefined) {
    server = http.createServer((req, res) => {
      if (req.method === 'GET' && (req.url ?? '').split('?')[0] === '/metrics') {
        exporter.getMetricsRequestHandler(req, res);
        return;
      }
      res.statusCode = 404;
      res.end('grpc-kube serves /metrics only\n');
    });
    const s = server;
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(listen.port, listen.host, () => resolve());
    });
    const a = s.address() as { address: string; port: number };
    bound = a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }
  // Gauges are read at collection: a component stopped before the final text would be missing from
  // it, so a run that writes the text at its end collects as it goes (each series keeps its last value).
  const collector =
    opts.collectEveryMs === undefined
      ? undefined
      : setInterval(() => void exporter.collect().catch(() => {}), opts.collectEveryMs);
  collector?.unref();
  let closed = false;
  return {
    address: bound,
    async text() {
      const { resourceMetrics } = await exporter.collect();
      return new PrometheusSerializer().serialize(resourceMetrics);
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(collector);
      if (server !== undefined) {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server?.close(() => resolve()));
      }
      metrics.disable();
      await provider.shutdown();
    },
  };
}

/** Write every metric in Prometheus text to `file`. */
export async function writeMetricsFile(endpoint: MetricsEndpoint, file: string): Promise<void> {
  await writeFile(file, await endpoint.text());
}
