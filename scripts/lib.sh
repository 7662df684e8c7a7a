# shellcheck shell=bash
# Shared helpers of QuackMesh's shell scripts (demo.sh, register-providers.sh,
# run-contributors.sh, seed-job.sh, dashboard-test.sh, record-demo.sh). Sourced, never run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Defines QM_ROOT (the repository root) and QM_PIDS (processes started with qm_start_node, which
# qm_stop_all stops). Callers keep their own `set -euo pipefail` and EXIT/INT/TERM traps.

QM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QM_PIDS=()

# qm_bin: prints the quackmesh binary to use: $QUACKMESH_BIN, else target/debug, else
# target/release; fails when none is built (scripts/setup.sh builds it).
qm_bin() {
  local c
  for c in "${QUACKMESH_BIN:-}" "$QM_ROOT/target/debug/quackmesh" "$QM_ROOT/target/release/quackmesh"; do
    if [[ -n "$c" && -x "$c" ]]; then echo "$c"; return 0; fi
  done
  echo "no quackmesh binary: run scripts/setup.sh (or set QUACKMESH_BIN)" >&2
  return 1
}

# qm_free_port: a free TCP port on 127.0.0.1.
qm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# qm_json EXPR: reads JSON on stdin as `d` and prints the Python expression EXPR.
qm_json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# qm_start_node NAME DIR [ARGS...]: starts `quackmesh node` with its data dir DIR on 127.0.0.1
# (random TCP port, random API port) and the extra ARGS, waits (30 s at most) for its API and
# sets QM_API (http://127.0.0.1:PORT), QM_ADDR (first listen multiaddr with /p2p/) and QM_PID.
# stdout goes to DIR/stdout, the log to DIR/log. The pid is added to QM_PIDS.
qm_start_node() {
  local name=$1 dir=$2 bin
  shift 2
  bin=$(qm_bin)
  mkdir -p "$dir"
  "$bin" node --data-dir "$dir" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 "$@" \
    >"$dir/stdout" 2>"$dir/log" &
  QM_PID=$!
  QM_PIDS+=("$QM_PID")
  echo "$QM_PID" >"$dir/pid"
  for _ in $(seq 1 300); do
    if grep -q '^api: ' "$dir/stdout" 2>/dev/null; then break; fi
    if ! kill -0 "$QM_PID" 2>/dev/null; then
      echo "node $name exited; the end of its log ($dir/log):" >&2; tail -20 "$dir/log" >&2
      return 1
    fi
    sleep 0.1
  done
  QM_API=$(sed -n 's/^api: //p' "$dir/stdout")
  QM_ADDR=$(sed -n 's/^listen: //p' "$dir/stdout" | head -1)
  if [[ -z "$QM_API" || -z "$QM_ADDR" ]]; then
    echo "node $name did not start in 30 s; see $dir/log" >&2
    return 1
  fi
}

# qm_stop_all: stops (SIGTERM, then SIGKILL after 10 s) every process in QM_PIDS and waits.
qm_stop_all() {
  local p
  for p in "${QM_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${QM_PIDS[@]}"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
    if [[ $alive -eq 0 ]]; then break; fi
    sleep 0.1
  done
  for p in "${QM_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${QM_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  QM_PIDS=()
}

# qm_stop_pid_files FILE...: stops the processes whose pids the files hold (detached runs).
qm_stop_pid_files() {
  local f p
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    p=$(cat "$f")
    if kill "$p" 2>/dev/null; then echo "stopped pid $p ($f)"; fi
  done
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    p=$(cat "$f")
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    rm -f "$f"
  done
}

# qm_market_available CHAIN_ARGS...: how many machines can be rented now (0 on any error).
qm_market_available() {
  "$(qm_bin)" market list "$@" --available --json --log warn 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0
}

# qm_usage FILE: prints the header comment of FILE (from line 2 to the first non-comment line).
qm_usage() { sed -n '2,/^[^#]/p' "$1" | sed '$d' | sed 's/^# \{0,1\}//'; }

# qm_run_dir_with_cleanup NAME: uses $run_dir (a fresh temp dir when empty) and, on exit, stops
# every node started (and removes a temp run dir) unless $detach is 1 and all went well.
qm_run_dir_with_cleanup() {
  created_run_dir=0
  if [[ -z "$run_dir" ]]; then
    run_dir="$(mktemp -d "${TMPDIR:-/tmp}/quackmesh-$1.XXXXXX")"; created_run_dir=1
  fi
  mkdir -p "$run_dir"
  trap qm_cleanup_run EXIT
  trap 'echo; exit 130' INT TERM
}

qm_cleanup_run() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ ${detach:-0} -eq 0 || $rc -ne 0 ]]; then
    qm_stop_all
    if [[ $created_run_dir -eq 1 ]]; then rm -rf "$run_dir"; fi
  fi
  exit "$rc"
}
