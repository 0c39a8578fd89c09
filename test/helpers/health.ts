// grpc.health.v1 Check against a target, on a channel of its own (closed after the answer).

import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

const HealthClient = grpc.makeGenericClientConstructor(healthService, 'Health');

/** The serving status `target` reports for `service` ('' = the server as a whole). */
export function checkHealth(
  target: string,
  service = '',
  credentials = grpc.credentials.createInsecure(),
): Promise<string> {
  const client = new HealthClient(target, credentials, { 'grpc.enable_http_proxy': 0 });
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      '/grpc.health.v1.Health/Check',
      (m: { service: string }) => healthService['Check']!.requestSerialize(m),
      (b: Buffer) => healthService['Check']!.responseDeserialize(b) as { status: string },
      { service },
      { deadline: Date.now() + 30_000 },
      (err, res) => {
        client.close();
        if (err || !res) reject(err);
        else resolve(res.status);
      },
    );
  });
}
