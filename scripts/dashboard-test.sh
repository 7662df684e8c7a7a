#!/usr/bin/env bash
# Browser test of the dashboard (CI runs it from scripts/test.sh): runs a real demo network
# (scripts/demo.sh --stay: devnet, bootstrap, 2 coordinators, 3 providers, contributors on real
# MNIST, one training job), then headless Chromium loads the requester node's dashboard and
# scripts/dashboard-test.mjs checks the accuracy chart, the marketplace and the transactions
# against the node's API and the devnet itself. Stops everything it started, also on failure
# or Ctrl-C. About a minute.
#
# Usage: scripts/dashboard-test.sh [--contributors N] [--rounds R] [--screenshot FILE]
#                                  [--timeout SECS]
#   --contributors N   demo contributors, 1-4 (default 2)
#   --rounds R         rounds of the demo job (default 3; 5 as in the plain demo for docs)
#   --screenshot FILE  save a 1400x900 screenshot of the checked page (also
#                      $QUACKMESH_DASHBOARD_SCREENSHOT); refresh the committed picture with
#                      scripts/dashboard-test.sh --rounds 5 --screenshot docs/dashboard.png
#   --timeout SECS     longest wait for the demo's job to finish (default 300)
# Environment:
#   QUACKMESH_CHROMIUM      the browser (default: /usr/bin/chromium, else chromium on PATH);
#                           scripts/setup.sh installs Debian's chromium package
#   QUACKMESH_SKIP_BROWSER  1: skip (exit 0, saying so) when no browser is found; without it a
#                           missing browser is an error
# Needs scripts/setup.sh once (node_modules/playwright-core, the quackmesh binary, MNIST).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
caller_pwd=$PWD
cd "$QM_ROOT"
contributors=2
rounds=3
screenshot="${QUACKMESH_DASHBOARD_SCREENSHOT:-}"
timeout_s=300
while [[ $# -gt 0 ]]; do
  case "$1" in
    --contributors) contributors="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --screenshot) screenshot="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    -h|--help) qm_usage "$0"; exit 0 ;;
    *) echo "dashboard-test.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -n "$screenshot" && "$screenshot" != /* ]]; then screenshot="$caller_pwd/$screenshot"; fi
say() { printf '\033[1m[dashboard-test]\033[0m %s\n' "$*"; }

chromium="${QUACKMESH_CHROMIUM:-}"
if [[ -z "$chromium" ]]; then
  for c in /usr/bin/chromium "$(command -v chromium || true)" "$(command -v chromium-browser || true)"; do
    if [[ -n "$c" && -x "$c" ]]; then chromium=$c; break; fi
  done
fi
if [[ -z "$chromium" || ! -x "$chromium" ]]; then
  if [[ "${QUACKMESH_SKIP_BROWSER:-}" == 1 ]]; then
    say "SKIPPED: no Chromium found and QUACKMESH_SKIP_BROWSER=1 (install it: apt-get install chromium)"
    exit 0
  fi
  echo "dashboard-test.sh: no Chromium found (${chromium:-/usr/bin/chromium}); install it with" \
    "scripts/setup.sh or apt-get install chromium, or set QUACKMESH_SKIP_BROWSER=1 to skip" >&2
  exit 1
fi
if [[ ! -f node_modules/playwright-core/package.json ]]; then
  echo "dashboard-test.sh: node_modules/playwright-core missing; run scripts/setup.sh (npm ci)" >&2
  exit 1
fi
bin=$(qm_bin)

tmp="$(mktemp -d "${TMPDIR:-/tmp}/quackmesh-dashboard-test.XXXXXX")"
demo_pid=""
test_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$test_pid" ]]; then kill "$test_pid" 2>/dev/null || true; wait "$test_pid" 2>/dev/null || true; fi
  if [[ -n "$demo_pid" ]]; then
    kill "$demo_pid" 2>/dev/null || true # demo.sh stops its nodes and the devnet itself
    for _ in $(seq 1 300); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$demo_pid" 2>/dev/null; then
      echo "dashboard-test.sh: demo.sh did not stop in 30 s; killing its process group" >&2
      kill -KILL -- "-$demo_pid" 2>/dev/null || kill -KILL "$demo_pid" 2>/dev/null || true
    fi
    wait "$demo_pid" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$tmp/demo.log" ]]; then
    echo "--- the end of the demo's output:" >&2; tail -25 "$tmp/demo.log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
say "starting the demo network (scripts/demo.sh --stay --contributors $contributors --rounds $rounds)"
# In its own session (setsid), so that a demo.sh that does not stop can be killed as a group.
setsid scripts/demo.sh --stay --contributors "$contributors" --rounds "$rounds" \
  --ready-file "$tmp/ready" >"$tmp/demo.log" 2>&1 </dev/null &
demo_pid=$!

value() { sed -n "s/^$1=//p" "$tmp/ready" 2>/dev/null | tail -1; }
deadline=$(( $(date +%s) + timeout_s ))
until [[ -n "$(value FINISHED)" ]]; do
  if ! kill -0 "$demo_pid" 2>/dev/null; then echo "dashboard-test.sh: demo.sh exited early" >&2; exit 1; fi
  if (( $(date +%s) > deadline )); then echo "dashboard-test.sh: the demo did not finish in $timeout_s s" >&2; exit 1; fi
  sleep 0.5
done
grep -E 'round [0-9]+: global accuracy|time taken' "$tmp/demo.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'
say "demo finished in $(value FINISHED) s; dashboard at $(value DASHBOARD_URL)"

"$bin" market list --rpc-url "$(value RPC_URL)" --deployment "$(value DEPLOYMENT)" --all --json \
  --log warn >"$tmp/market.json"
say "loading it in headless Chromium ($("$chromium" --version 2>/dev/null | head -1))"
DASHBOARD_URL=$(value DASHBOARD_URL) RPC_URL=$(value RPC_URL) JOB_ID=$(value JOB_ID) \
  DEPLOYMENT=$(value DEPLOYMENT) MARKET_JSON="$tmp/market.json" EXPECT_PROVIDERS=3 \
  CHROMIUM="$chromium" SCREENSHOT="$screenshot" \
  timeout -k 5 120 node scripts/dashboard-test.mjs &
test_pid=$!
rc=0
wait "$test_pid" || rc=$?
test_pid=""
if [[ $rc -ne 0 ]]; then echo "dashboard-test.sh: the browser checks failed (exit $rc)" >&2; exit "$rc"; fi
say "passed in $(( $(date +%s) - started )) s"
