#!/bin/sh
# Entrypoint of the QuackMesh image for docker-compose.yml: one role per container, the same
# network as scripts/demo.sh (devnet, bootstrap, 2 coordinators, 3 providers, contributors, a
# requester and a seed job). Containers share the volume /shared: the deployment record
# (devnet.json), the bootstrap node's PeerId and the contributors' MNIST shards.
#
#   quackmesh-entrypoint devnet                 anvil on 0.0.0.0:8545 (chain id 31337)
#   quackmesh-entrypoint deploy                 deploys the contracts, funds anvil's accounts
#   quackmesh-entrypoint shards N               splits /data/mnist into N shards
#   quackmesh-entrypoint node ROLE-ARGS...      a node that bootstraps from the bootstrap service
#   quackmesh-entrypoint bootstrap              the bootstrap node (publishes its PeerId)
#   quackmesh-entrypoint seed ROUNDS N          rents the 3 providers, submits a job of ROUNDS
#                                               rounds for N contributors, follows it
#   anything else                               run as a command (e.g. quackmesh --help)
#
# Environment: RPC_URL (default http://devnet:8545), BOOTSTRAP_IP (default 172.28.0.10),
# P2P_PORT (4001), API_PORT (7720), REQUESTER (default http://requester:7720).
set -eu
rpc=${RPC_URL:-http://devnet:8545}
boot_ip=${BOOTSTRAP_IP:-172.28.0.10}
p2p=${P2P_PORT:-4001}
api=${API_PORT:-7720}
dep=/shared/devnet.json

wait_for() { # wait_for FILE SECONDS
  i=0
  while [ ! -s "$1" ]; do
    i=$((i + 1))
    if [ "$i" -gt "$2" ]; then echo "entrypoint: $1 did not appear in $2 s" >&2; exit 1; fi
    sleep 1
  done
}

role=${1:-}
[ $# -gt 0 ] && shift
case "$role" in
  devnet)
    exec anvil --host 0.0.0.0 --port 8545 --chain-id 31337 --block-time 1 --mixed-mining
    ;;
  deploy)
    i=0
    until curl -sf -X POST -H 'content-type: application/json' \
      --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$rpc" >/dev/null; do
      i=$((i + 1)); [ "$i" -le 60 ] || { echo "entrypoint: no chain at $rpc" >&2; exit 1; }; sleep 1
    done
    quackmesh --log warn chain deploy --network devnet --rpc-url "$rpc" --deployment "$dep.new" \
      --force --fund-dev-accounts 1000000
    mv "$dep.new" "$dep"
    ;;
  shards)
    rm -rf /shared/shards
    quackmesh data partition --data /data/mnist --parts "${1:-2}" --out /shared/shards --log warn
    ;;
  bootstrap)
    rm -f /shared/bootstrap.peer
    quackmesh node --data-dir /var/lib/quackmesh --listen "/ip4/0.0.0.0/tcp/$p2p" \
      --listen "/ip4/0.0.0.0/udp/$p2p/quic-v1" --api "0.0.0.0:$api" &
    pid=$!
    trap 'kill "$pid" 2>/dev/null; wait "$pid"; exit 0' INT TERM
    i=0
    until peer=$(curl -sf "http://127.0.0.1:$api/api/node" | sed -n 's/.*"peer_id":"\([^"]*\)".*/\1/p') \
      && [ -n "$peer" ]; do
      i=$((i + 1)); [ "$i" -le 60 ] || { echo "entrypoint: bootstrap API not up" >&2; exit 1; }; sleep 1
    done
    echo "$peer" >/shared/bootstrap.peer
    echo "bootstrap: /ip4/$boot_ip/tcp/$p2p/p2p/$peer"
    wait "$pid"
    ;;
  node)
    wait_for "$dep" 120
    wait_for /shared/bootstrap.peer 120
    peer=$(cat /shared/bootstrap.peer)
    exec quackmesh node --data-dir /var/lib/quackmesh --listen "/ip4/0.0.0.0/tcp/$p2p" \
      --listen "/ip4/0.0.0.0/udp/$p2p/quic-v1" --api "0.0.0.0:$api" \
      --bootstrap "/ip4/$boot_ip/tcp/$p2p/p2p/$peer" \
      --network devnet --rpc-url "$rpc" --deployment "$dep" "$@"
    ;;
  seed)
    rounds=${1:-5}
    n=${2:-2}
    req=${REQUESTER:-http://requester:7720}
    wait_for "$dep" 120
    chain="--network devnet --rpc-url $rpc --deployment $dep"
    i=0
    # shellcheck disable=SC2086 # $chain is a list of flags
    until [ "$(quackmesh market list $chain --available --json --log warn 2>/dev/null | grep -o '"machine_id"' | wc -l)" -ge 3 ]; do
      i=$((i + 1)); [ "$i" -le 120 ] || { echo "entrypoint: providers not listed" >&2; exit 1; }; sleep 1
    done
    # shellcheck disable=SC2086
    quackmesh market rent $chain --dev-account 0 --machines 3 --hours 1 --log warn
    until curl -sf "$req/api/node" >/dev/null; do sleep 1; done
    out=$(quackmesh job submit --node "$req" --validation /data/mnist --rounds "$rounds" \
      --reward $((rounds * n * 10)) --min-contributors "$n" --log warn)
    echo "$out"
    job=$(echo "$out" | sed -n 's/^job_id: //p')
    [ -n "$job" ] || { echo "entrypoint: job submission failed" >&2; exit 1; }
    # follow the job until it finishes (10 minutes at most)
    i=0
    until curl -sf "$req/api/job/$job" | grep -q '"status":"finished"'; do
      i=$((i + 1)); [ "$i" -le 300 ] || { echo "entrypoint: job $job did not finish" >&2; exit 1; }; sleep 2
    done
    quackmesh job status "$job" --node "$req" --log warn
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
