// Where the lab's files (proto/, scenarios/, deploy/crds) are, from src/ or dist/src/ alike: the
// repository root (or an image built from it), the first directory above with a package.json and a
// proto/ folder.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

let root: string | undefined;

export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'proto'))) {
    const up = dirname(dir);
    if (up === dir)
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `package.json with proto/ not found above ${fileURLToPath(import.meta.url)}; run the lab from a checkout of grpc-kube`,
      );
    dir = up;
  }
  root = dir;
  return dir;
}
