// `grpc-kube lab`: placeholder until the lab runner lands (see issue 3).
export async function labCommand(_args: string[]): Promise<number> {
  process.stderr.write('grpc-kube lab: not built yet\n');
  return 1;
}
