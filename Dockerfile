# syntax=docker/dockerfile:1
# Multi-stage: build the TypeScript, then a runtime image with production dependencies only.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/copy-build-assets.ts ./scripts/
COPY src ./src
# tsc, then the files it does not emit (migrations, the queue board's page) into dist/.
RUN npm run build

# The stand-in Inference Bridge (test/stand-ins/bridge.ts), for docker compose demos; needs dev dependencies.
FROM build AS stand-in-bridge
COPY test/stand-ins ./test/stand-ins
ENV BRIDGE_HOST=0.0.0.0 BRIDGE_PORT=32560
EXPOSE 32560
CMD ["node", "--import", "tsx", "test/stand-ins/bridge.ts"]

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    PORT=32550 \
    WORKSPACE_PATH=/workspace
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
    && mkdir -p /app/.data && chown node:node /app/.data
COPY --from=build /app/dist ./dist
USER node
EXPOSE 32550
# Migrations are applied at start-up; /health answers 503 while the database is unreachable.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||32550)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/src/main.js"]
