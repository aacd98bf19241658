#!/usr/bin/env bash
# `make demo`: a throwaway Redis, a demo worker, demo traffic and the exporter, all on
# loopback. Runs in the foreground; Ctrl-C stops everything it started and exits 0.
# The exporter starts first, so it sees every event of the demo's traffic: no task is
# counted under queue_name="(unknown)" for want of its task-sent.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.venv/bin"
state="${DEMO_STATE_DIR:-$root/.demo}"
mkdir -p "$state"

free_port() { "$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_free() { "$bin/python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $1)) == 0)"; }

redis_port=$(free_port)
exporter_port=${DEMO_EXPORTER_PORT:-9808}
port_free "$exporter_port" || exporter_port=$(free_port)
export DEMO_BROKER_URL="redis://127.0.0.1:${redis_port}/0"

pids=()
stop() {
  trap - EXIT INT TERM
  echo; echo "stopping the demo"
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
# Ctrl-C and SIGTERM are how a demo ends: a clean stop, exit 0 (make reports no error).
trap stop EXIT
trap 'stop; exit 0' INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$state" >"$state/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

url="http://127.0.0.1:${exporter_port}"
"$bin/celery-metrics-exporter" --broker-url "$DEMO_BROKER_URL" \
  --listen-address "127.0.0.1:${exporter_port}" >"$state/exporter.log" 2>&1 &
pids+=($!)
# Consuming events before the first task is sent.
for _ in $(seq 300); do curl -fsS "$url/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

cd "$root/deploy/demo"
"$bin/celery" -A app worker -n "demo@$(hostname)" -Q celery,reports -P prefork -c 2 -E \
  -l warning --without-mingle --without-gossip >"$state/worker.log" 2>&1 &
pids+=($!)
"$bin/python" traffic.py 5 >"$state/traffic.log" 2>&1 &
pids+=($!)

for _ in $(seq 300); do
  curl -fsS "$url/metrics" 2>/dev/null | grep -q '^celery_task_succeeded_total' && break
  sleep 0.1
done
cat <<MSG

celery-metrics-exporter demo is running.
  status page:  $url/
  metrics:      $url/metrics
  readiness:    $url/readyz
  broker:       $DEMO_BROKER_URL (throwaway, no persistence)
  logs:         $state/{exporter,worker,traffic,redis}.log

Try:  curl -s $url/metrics | grep -E '^celery_(task_succeeded|task_failed|worker_up)'
Press Ctrl-C to stop.
MSG
wait || true
