# syntax=docker/dockerfile:1
# One image for everything grpc-kube deploys (deploy/): the Hello example's server and client, the
# L7 proxy (`grpc-kube proxy`) and the xDS control plane (`grpc-kube xds serve`). The manifests set
# the command per container; the targets below only change the default CMD, for `docker run`:
#
#   docker build -t grpc-kube:0.1.0 .                    # default: the Hello server
#   docker build -t grpc-kube-client:0.1.0 --target client .
#   kind load docker-image grpc-kube:0.1.0               # then: kubectl apply -k deploy/<scenario>
#
# node runs the script directly (no npm, no shell), so SIGTERM reaches the server kit's handler.

ARG NODE_VERSION=20

# ---- build: compile TypeScript with the dev dependencies, then drop them ----
FROM node:${NODE_VERSION}-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The workspaces (packages/*: the core, xds, proxy, lab, cli) with their sources: npm ci links them into node_modules.
COPY packages ./packages
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.base.json ./
COPY proto ./proto
COPY examples ./examples
# The image is an application of the library: the peers its CLI needs (grpc-js, and grpc-js-xds for the
# xds target) become its dependencies at the locked versions; then every dev-only package is dropped.
RUN npx tsc -b tsconfig.json \
 && node -e "const fs = require('fs'); const p = require('./package.json'); const l = require('./package-lock.json'); \
      for (const n of ['@grpc/grpc-js', '@grpc/grpc-js-xds']) p.dependencies[n] = l.packages['node_modules/' + n].version; \
      delete p.devDependencies; fs.writeFileSync('package.json', JSON.stringify(p, null, 2));" \
 && npm install --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime: production node_modules, compiled JS and the protos; non-root ----
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/proto ./proto
COPY --from=build /src/packages ./packages
COPY --from=build /src/dist/examples ./dist/examples
# uid/gid 1000 is the image's `node` user; numeric so that runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 50051

FROM runtime AS client
CMD ["node", "dist/examples/hello/client.js"]

FROM runtime AS proxy
# nghttpx for `--data-plane nghttpx` (the native data path; the default Node one needs nothing).
USER 0:0
RUN apt-get update && apt-get install -y --no-install-recommends nghttp2-proxy && rm -rf /var/lib/apt/lists/*
USER 1000:1000
EXPOSE 15001
# A proxy needs its Service (`--mode=ingress --listen=0.0.0.0:50051 --target=svc.ns:port`, as
# deploy/proxy passes): without one the default lists the flags instead of failing at start.
CMD ["node", "packages/cli/dist/src/main.js", "proxy", "--help"]

FROM runtime AS xds
EXPOSE 18000
CMD ["node", "packages/cli/dist/src/main.js", "xds", "serve", "--listen=0.0.0.0:18000"]

# Last, so that a plain `docker build .` gives the server.
FROM runtime AS server
CMD ["node", "dist/examples/hello/server.js"]
