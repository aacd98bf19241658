#!/usr/bin/env bash
# `make demo`: a throwaway Redis, a demo worker, demo traffic and the exporter, all on
# loopback. Runs in the foreground; Ctrl-C stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.venv/bin"
state="$root/.demo"
mkdir -p "$state"

free_port() { "$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_free() { "$bin/python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $1)) == 0)"; }

redis_port=$(free_port)
exporter_port=${DEMO_EXPORTER_PORT:-9808}
port_free "$exporter_port" || exporter_port=$(free_port)
export DEMO_BROKER_URL="redis://127.0.0.1:${redis_port}/0"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "stopping the demo"
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$state" >"$state/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cd "$root/deploy/demo"
"$bin/celery" -A app worker -n "demo@$(hostname)" -Q celery,reports -P prefork -c 2 -E \
  -l warning --without-mingle --without-gossip >"$state/worker.log" 2>&1 &
pids+=($!)
"$bin/python" traffic.py 5 >"$state/traffic.log" 2>&1 &
pids+=($!)
"$bin/celery-metrics-exporter" --broker-url "$DEMO_BROKER_URL" \
  --listen-address "127.0.0.1:${exporter_port}" >"$state/exporter.log" 2>&1 &
pids+=($!)

url="http://127.0.0.1:${exporter_port}"
for _ in $(seq 300); do
  curl -fsS "$url/metrics" 2>/dev/null | grep -q '^celery_task_succeeded_total' && break
  sleep 0.1
done
cat <<MSG

celery-metrics-exporter demo is running.
  metrics:      $url/metrics
  landing page: $url/
  readiness:    $url/readyz
  broker:       $DEMO_BROKER_URL (throwaway, no persistence)
  logs:         $state/{exporter,worker,traffic,redis}.log

Try:  curl -s $url/metrics | grep -E '^celery_(task_succeeded|task_failed|worker_up)'
Press Ctrl-C to stop.
MSG
wait
