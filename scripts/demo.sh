#!/usr/bin/env bash
# The demo: broker, gateway, compactor and sample data on 127.0.0.1, plus sample queries.
#   scripts/demo.sh        # start everything, leave the gateway running
#   scripts/demo.sh stop   # stop the demo's gateway and broker
# Ports: KAPPA_DEMO_BROKER_PORT (9092), KAPPA_DEMO_PORT (50051).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
broker_port="${KAPPA_DEMO_BROKER_PORT:-9092}"
gateway_port="${KAPPA_DEMO_PORT:-50051}"
run_dir="$KAPPA_CACHE/run"
gateway_pid="$run_dir/demo-gateway.pid"
mkdir -p "$run_dir"

stop_gateway() {
  if [[ -f "$gateway_pid" ]]; then
    kill "$(cat "$gateway_pid")" 2>/dev/null || true
    rm -f "$gateway_pid"
  fi
}

if [[ "${1:-}" == "stop" ]]; then
  stop_gateway
  bash scripts/broker.sh stop "$broker_port"
  exit 0
fi

bash scripts/install-deps.sh
bash scripts/install-broker.sh
log "building kappa-gateway and kappa-compactor"
cargo build --locked --bin kappa-gateway --bin kappa-compactor
stop_gateway

brokers=$(bash scripts/broker.sh start "$broker_port")
lake="$run_dir/demo-lake"
rm -rf "$lake"
"$KAPPA_VENV/bin/python" scripts/demo_data.py --brokers "$brokers" --topic orders --partitions 3 --count 3000

gateway_log="$run_dir/demo-gateway.log"
setsid "$CARGO_TARGET_DIR/debug/kappa-gateway" serve --brokers "$brokers" \
  --listen "127.0.0.1:$gateway_port" --config deploy/kappa.toml --lake "file://$lake" \
  >"$gateway_log" 2>&1 </dev/null &
echo $! >"$gateway_pid"
for _ in $(seq 1 300); do
  grep -q "^listening on" "$gateway_log" && break
  kill -0 "$(cat "$gateway_pid")" 2>/dev/null || { cat "$gateway_log" >&2; exit 1; }
  sleep 0.1
done
grep -q "^listening on" "$gateway_log" || { cat "$gateway_log" >&2; exit 1; }

log "sample query through ADBC Flight SQL:"
"$KAPPA_VENV/bin/python" scripts/demo_query.py "grpc://127.0.0.1:$gateway_port"

# The sample orders span the last 50 minutes: tier those older than 20 minutes into the lake,
# then read the Delta table with two engines that know nothing of kappa.
log "compactor: tiering orders older than 20 minutes into $lake"
KAPPA_LOG="error,buoyant_kernel=off" "$CARGO_TARGET_DIR/debug/kappa-compactor" run --once --brokers "$brokers" \
  --config deploy/kappa.toml --lake "file://$lake" --tier-after 20m
log "producing 200 more orders (in Kafka only, above the watermarks)"
"$KAPPA_VENV/bin/python" scripts/demo_data.py --brokers "$brokers" --topic orders --count 200 --first-id 3000
"$KAPPA_VENV/bin/python" scripts/demo_lake.py "$lake/tables/orders" "grpc://127.0.0.1:$gateway_port"

cat <<MSG

kappa is running.
  Flight SQL:  grpc://127.0.0.1:$gateway_port   (table 'orders'; every other topic is a table too)
  Kafka:       $brokers
  Gateway log: $gateway_log
  Lake:        $lake/tables/orders (Delta Lake; kappa-compactor run --once tiers more)
  Python:      $KAPPA_VENV/bin/python  (has adbc_driver_flightsql, pyarrow, pandas)
  Stop with:   scripts/demo.sh stop
MSG
