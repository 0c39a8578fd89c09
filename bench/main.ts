// `npm run bench -- <name>`: runs one benchmark; its last line of output is one JSON object with the
// figures named in docs/figures.md.
const name = process.argv[2];
const benches: Record<string, () => Promise<Record<string, unknown>>> = {
  resolver: async () => (await import('./resolver.js')).runResolverBench(),
  xds: async () => (await import('./xds.js')).runXdsBench(),
  proxy: async () => (await import('./proxy.js')).runProxyBench(),
  kube: async () => (await import('./kube.js')).runKubeBench(),
  startup: async () => (await import('./startup.js')).runStartupBench(),
};
const run = name === undefined ? undefined : benches[name];
if (run === undefined) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(benches).join('|')}>\n`);
  process.exitCode = 2;
} else {
  run().then(
    (figures) => {
      process.stdout.write(JSON.stringify(figures) + '\n');
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(
        `bench ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
