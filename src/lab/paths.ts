// Where the package's own files (proto/, scenarios/) are, from src/ or dist/src/ alike.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

let root: string | undefined;

export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir)
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `package.json not found above ${fileURLToPath(import.meta.url)}; reinstall grpc-kube`,
      );
    dir = up;
  }
  root = dir;
  return dir;
}
