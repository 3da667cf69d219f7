#!/usr/bin/env bash
# Starts or stops the test broker (nisshi) on 127.0.0.1.
#   scripts/broker.sh start [PORT]   # fresh data dir; prints the bootstrap address
#   scripts/broker.sh stop [PORT]
#   scripts/broker.sh restart PORT   # same port, same data: a broker back after an outage
# PORT 0 (the default for tests) picks a free port.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd="${1:-start}"
port="${2:-0}"
run_dir="$KAPPA_CACHE/run"
mkdir -p "$run_dir"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Stops the broker recorded for a port and waits until it has exited.
stop_broker() {
  local pidfile="$run_dir/broker-$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "$cmd" in
  start|restart)
    [[ -x "$NISSHI_BIN" ]] || bash "$KAPPA_ROOT/scripts/install-broker.sh"
    [[ "$port" != 0 ]] || port=$(free_port)
    stop_broker "$port"  # a previous run on the same port
    data="$run_dir/broker-$port"
    if [[ "$cmd" == start ]]; then
      rm -rf "$data" && mkdir -p "$data"
    else
      # Only the new log is read for readiness.
      [[ -d "$data" ]] || { echo "no broker data for port $port to restart" >&2; exit 1; }
      mv "$data/broker.log" "$data/broker.log.$(date +%s%N)" 2>/dev/null || true
    fi
    # The sqlite path is relative to the working directory: run from the data dir.
    (cd "$data" && exec setsid "$NISSHI_BIN" broker --cluster-id "kappa-$port" \
        --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine 'sqlite://nisshi.db?maintenance_interval=1s' \
        >"$data/broker.log" 2>&1 </dev/null) &
    echo $! >"$run_dir/broker-$port.pid"
    for _ in $(seq 1 300); do
      if grep -q "ready in" "$data/broker.log" 2>/dev/null; then
        log "broker: 127.0.0.1:$port ready (data in $data)"
        echo "127.0.0.1:$port"
        exit 0
      fi
      kill -0 "$(cat "$run_dir/broker-$port.pid")" 2>/dev/null || break
      sleep 0.1
    done
    log "broker: did not start; log follows"
    cat "$data/broker.log" >&2
    stop_broker "$port"
    exit 1
    ;;
  stop)
    stop_broker "$port"
    log "broker: stopped 127.0.0.1:$port"
    ;;
  *)
    echo "usage: $0 start|stop|restart [PORT]" >&2
    exit 2
    ;;
esac
