#!/usr/bin/env bash
# `npm run test:python`: the Python client's pytest suite (clients/python/tests) against a live service.
# Starts the stand-in Inference Bridge and the service (its embedded PostgreSQL in a temporary folder,
# or PYTHON_TEST_DATABASE_URL), both on loopback, over a temporary copy of the fixture workspace;
# installs the generated package into clients/python/.venv; runs pytest with a JUnit report in
# test-results/python.xml; stops what it started. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

port=${PYTHON_TEST_PORT:-32590}
bridge_port=${PYTHON_TEST_BRIDGE_PORT:-32591}
pg_port=${PYTHON_TEST_PG_PORT:-54391}
work=$(mktemp -d)
chmod 755 "$work" # the embedded PostgreSQL runs as its own user when we are root
service_pid=
bridge_pid=

stop() {
  local status=$?
  # Only what this script started, by process id.
  [ -n "$service_pid" ] && kill -TERM "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
  [ -n "$bridge_pid" ] && kill -TERM "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null
  if [ $status -ne 0 ]; then
    echo "--- service log (last 40 lines)" >&2
    tail -n 40 "$work/service.log" >&2 2>/dev/null || true
    echo "--- bridge log (last 10 lines)" >&2
    tail -n 10 "$work/bridge.log" >&2 2>/dev/null || true
  fi
  rm -rf "$work"
  exit $status
}
trap stop EXIT

echo "python venv and the generated client"
venv=$(bash scripts/python-venv.sh)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
  ./clients/python/graphcap-data-client

cp -r examples/workspace "$work/workspace"

echo "stand-in bridge on 127.0.0.1:$bridge_port"
BRIDGE_HOST=127.0.0.1 BRIDGE_PORT=$bridge_port BRIDGE_LATENCY_MS=20 \
  node --import tsx test/stand-ins/bridge.ts >"$work/bridge.log" 2>&1 &
bridge_pid=$!

echo "service on 127.0.0.1:$port"
database_env=(EMBEDDED_PG_DATA="$work/postgres" EMBEDDED_PG_PORT="$pg_port")
[ -n "${PYTHON_TEST_DATABASE_URL:-}" ] && database_env=(DATABASE_URL="$PYTHON_TEST_DATABASE_URL")
env -u DATABASE_URL -u API_TOKEN -u INTERNAL_TOKEN "${database_env[@]}" \
  PORT=$port HOST=127.0.0.1 NODE_ENV=test LOG_LEVEL=warn WORKSPACE_PATH="$work/workspace" \
  INFERENCE_BRIDGE_URL="http://127.0.0.1:$bridge_port" BRIDGE_TIMEOUT_MS=30000 POLL_INTERVAL_MS=200 \
  SHUTDOWN_GRACE_SECONDS=2 \
  node --import tsx src/main.ts >"$work/service.log" 2>&1 &
service_pid=$!

# Up to two minutes for the embedded PostgreSQL's first start.
for _ in $(seq 1 240); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$bridge_port/__control" >/dev/null 2>&1; then
    break
  fi
  kill -0 "$service_pid" 2>/dev/null || { echo "the service exited during start-up" >&2; exit 1; }
  kill -0 "$bridge_pid" 2>/dev/null || { echo "the stand-in bridge exited during start-up" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { echo "the service did not become healthy" >&2; exit 1; }

echo "pytest"
mkdir -p test-results
cd clients/python
GRAPHCAP_URL="http://127.0.0.1:$port" GRAPHCAP_BRIDGE_URL="http://127.0.0.1:$bridge_port" \
  GRAPHCAP_FIXTURE_WORKSPACE="$work/workspace" \
  "$venv/bin/python" -m pytest -p no:cacheprovider --junitxml="$repo/test-results/python.xml" "$@"
