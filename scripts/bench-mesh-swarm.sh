#!/usr/bin/env bash
# Dissemination benchmark of the QuackMesh mesh (issue 3): 17 `quackmesh node` processes, each
# in its own network namespace on a private bridge, each uplink shaped to 400 Mbit/s with tbf.
# One origin sends a 64 MiB blob to the 16 others:
#   star:  the origin sends the whole blob to each peer in turn (each fetch restricted to the
#          origin, one after the other);
#   swarm: the 16 fetch at once from whoever has chunks (the mesh's normal fetch).
# Runs the swarm, then the star, then the swarm again with another blob; prints the times and
# swarm/star (target <= 0.2) for both swarms.
#
# Needs root, iproute2 (ip, tc), curl and jq. Everything it creates (namespaces qmsw-*, with
# the veths qmv* and the bridge qmswbr0 inside qmsw-br; node processes; the data dir) is
# removed on exit, Ctrl-C or failure.
# Data dirs live on tmpfs (/dev/shm) by default: 17 nodes on one machine would otherwise
# contend for one disk, which a real network does not; set QM_SWARM_DIR to use a disk.
#
# Env: QM_NODES (17), QM_MIB (64), QM_RATE (400mbit), QM_TBF_LATENCY (tbf queue, 50ms),
# QM_TRANSPORT (tcp or quic, default tcp), QM_SWARM_DIR, QM_BIN (release binary),
# QM_LOG (node log filter, default warn), QM_KEEP (a directory to copy logs and reports to),
# QM_THREADS (tokio worker threads per node; default 0, tokio's default of one per core),
# QM_STAR (1; 0 skips the star and the second swarm, for diagnosing the swarm).
set -euo pipefail

NODES=${QM_NODES:-17}
MIB=${QM_MIB:-64}
RATE=${QM_RATE:-400mbit}
TBF_LATENCY=${QM_TBF_LATENCY:-50ms}
TRANSPORT=${QM_TRANSPORT:-tcp}
THREADS=${QM_THREADS:-0}
RUN_STAR=${QM_STAR:-1}
THREADS_ENV=
[ "$THREADS" = 0 ] || THREADS_ENV="TOKIO_WORKER_THREADS=$THREADS"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${QM_BIN:-$ROOT/target/release/quackmesh}
BR=qmswbr0
NS=qmsw
SUBNET=10.77.0
PORT=4001
API=127.0.0.1:7720

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, tc)" >&2; exit 1; }
for t in ip tc curl jq; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
if [ ! -x "$BIN" ] || [ -z "${QM_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --bin quackmesh)
fi

BASE=${QM_SWARM_DIR:-}
if [ -z "$BASE" ]; then
    if [ -d /dev/shm ]; then BASE=$(mktemp -d /dev/shm/qm-swarm.XXXXXX); else BASE=$(mktemp -d); fi
else
    mkdir -p "$BASE"; BASE=$(mktemp -d "$BASE/qm-swarm.XXXXXX")
fi
PIDS=()

ns_pids() { # every process running in our namespaces (nodes, curls): all started here
    for i in $(seq 0 $((NODES - 1))); do ip netns pids "$NS-$i" 2>/dev/null; done
}

cleanup() {
    set +e
    if [ -n "${QM_KEEP:-}" ]; then
        mkdir -p "$QM_KEEP" && cp "$BASE"/*.json "$QM_KEEP"/ 2>/dev/null
        for d in "$BASE"/n*; do cp "$d/log" "$QM_KEEP/$(basename "$d").log" 2>/dev/null; cp "$d/out" "$QM_KEEP/$(basename "$d").out" 2>/dev/null; done
    fi
    for pid in "${PIDS[@]}" $(ns_pids); do kill "$pid" 2>/dev/null; done
    for _ in $(seq 1 20); do [ -z "$(ns_pids)" ] && break; sleep 0.25; done
    for pid in $(ns_pids); do kill -9 "$pid" 2>/dev/null; done
    # Deleting a namespace deletes the links in it: the veths and the bridge go with them.
    for i in $(seq 0 $((NODES - 1))); do ip netns del "$NS-$i" 2>/dev/null; done
    ip netns del "$NS-br" 2>/dev/null
    rm -rf "$BASE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local i=$1; shift; ip netns exec "$NS-$i" "$@"; }
addr() { echo "$SUBNET.$((10 + $1))"; }

echo "setting up $NODES namespaces on bridge $BR, uplinks shaped to $RATE" >&2
# The bridge lives in a namespace of its own, so the host's namespace gets no links at all,
# and bridged frames skip iptables (br_netfilter): the host's bridge-nf-call-iptables=1 would
# otherwise send every frame through it (3% of the swarm's CPU), and a per-bridge setting
# cannot override it. The sysctl is per namespace; where br_netfilter is not loaded it is absent.
ip netns add "$NS-br"
ip netns exec "$NS-br" sh -c 'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e "$f" ] && echo 0 >"$f"; done; true'
ip -n "$NS-br" link add "$BR" type bridge
ip -n "$NS-br" link set "$BR" up
for i in $(seq 0 $((NODES - 1))); do
    ip netns add "$NS-$i"
    ip -n "$NS-br" link add "qmv$i" type veth peer name eth0 netns "$NS-$i"
    ip -n "$NS-br" link set "qmv$i" master "$BR" up
    in_ns "$i" ip link set lo up
    in_ns "$i" ip addr add "$(addr "$i")/24" dev eth0
    in_ns "$i" ip link set eth0 up
    # The node's uplink: what it sends leaves through this shaper.
    in_ns "$i" tc qdisc add dev eth0 root tbf rate "$RATE" burst 512kb latency "$TBF_LATENCY"
done

listen_addr() {
    if [ "$TRANSPORT" = quic ]; then echo "/ip4/$(addr "$1")/udp/$PORT/quic-v1"; else echo "/ip4/$(addr "$1")/tcp/$PORT"; fi
}

start_node() {
    local i=$1; shift
    local dir="$BASE/n$i"
    mkdir -p "$dir"
    # Not through a shell function: $! must be the node itself (ip netns exec execs it).
    ip netns exec "$NS-$i" env QUACKMESH_LOG="${QM_LOG:-warn}" $THREADS_ENV "$BIN" node --data-dir "$dir/data" \
        --listen "$(listen_addr "$i")" --api "$API" "$@" >"$dir/out" 2>"$dir/log" &
    PIDS+=($!)
}

cpu_seconds() { # user+system CPU seconds of the node processes
    local ticks=0 pid
    for pid in "${PIDS[@]}"; do
        [ -r "/proc/$pid/stat" ] && ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$ticks / $(getconf CLK_TCK)" | bc -l
}

wait_line() { # file prefix -> value
    for _ in $(seq 1 300); do
        local v
        v=$(sed -n "s/^$2: //p" "$1" | head -1)
        [ -n "$v" ] && { echo "$v"; return 0; }
        sleep 0.1
    done
    echo "node did not start: $1" >&2; cat "${1%/out}/log" >&2; return 1
}

api() { local i=$1; shift; in_ns "$i" curl -sS --fail-with-body --max-time 600 "$@"; }

start_node 0
ORIGIN=$(wait_line "$BASE/n0/out" peer_id)
BOOT="$(listen_addr 0)/p2p/$ORIGIN"
for i in $(seq 1 $((NODES - 1))); do start_node "$i" --bootstrap "$BOOT"; done
for i in $(seq 1 $((NODES - 1))); do wait_line "$BASE/n$i/out" api >/dev/null; done

echo "waiting for the DHT to fill" >&2
for i in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 1 300); do
        n=$(api "$i" "http://$API/api/node" | jq '.routing_table_peers') || n=0
        [ "${n:-0}" -ge $((NODES / 2)) ] && break
        sleep 0.1
    done
done

put_blob() { # name -> id (random bytes: no two chunks alike)
    head -c $((MIB * 1024 * 1024)) /dev/urandom >"$BASE/blob-$1"
    api 0 -X POST --data-binary "@$BASE/blob-$1" "http://$API/api/blob" | jq -r .id
}

now() { date +%s.%N; }

# Swarm: everyone fetches at once from whoever has chunks. Sets SWARM (s) and SWARM_CPU.
run_swarm() { # kind (names the reports)
    local kind=$1 id c0 t0 t1 i
    id=$(put_blob "$kind")
    echo "$kind: $((NODES - 1)) peers fetch $MIB MiB at once" >&2
    c0=$(cpu_seconds)
    t0=$(now)
    for i in $(seq 1 $((NODES - 1))); do
        ip netns exec "$NS-$i" curl -sS --fail-with-body --max-time 600 -X POST \
            "http://$API/api/blob/$id/fetch?wait=true" >"$BASE/$kind-$i.json" &
        FETCH_PIDS[$i]=$!
    done
    for i in $(seq 1 $((NODES - 1))); do
        wait "${FETCH_PIDS[$i]}" || { echo "node $i: $kind fetch failed: $(cat "$BASE/$kind-$i.json")" >&2; exit 1; }
    done
    t1=$(now)
    SWARM_CPU=$(echo "$(cpu_seconds) - $c0" | bc -l)
    SWARM=$(echo "$t1 - $t0" | bc -l)
}

# The swarm runs first, on nodes that have moved nothing yet, then the star, then the swarm
# again with another blob. The two swarms differ on this machine: after the star's gigabyte,
# the blob store's copies into tmpfs cost several times more CPU per byte (see
# docs/benchmarks.md), and the swarm is CPU-bound here, so both are printed.
run_swarm swarm
FRESH=$SWARM
FRESH_CPU=$SWARM_CPU

# What the idle mesh costs afterwards (DHT refresh, pings, gossip heartbeats), to tell it
# from the transfers.
IDLE_SECS=5
c0=$(cpu_seconds)
sleep "$IDLE_SECS"
IDLE_RATE=$(echo "($(cpu_seconds) - $c0) / $IDLE_SECS" | bc -l)

# Star: the origin sends the whole blob to each peer in turn.
if [ "$RUN_STAR" != 0 ]; then
    STAR_ID=$(put_blob star)
    echo "star: origin sends $MIB MiB to each of $((NODES - 1)) peers in turn" >&2
    c0=$(cpu_seconds)
    t0=$(now)
    for i in $(seq 1 $((NODES - 1))); do
        api "$i" -X POST "http://$API/api/blob/$STAR_ID/fetch?wait=true&from=$ORIGIN" >"$BASE/star-$i.json" ||
            { echo "node $i: star fetch failed: $(cat "$BASE/star-$i.json")" >&2; exit 1; }
    done
    t1=$(now)
    STAR_CPU=$(echo "$(cpu_seconds) - $c0" | bc -l)
    STAR=$(echo "$t1 - $t0" | bc -l)
    run_swarm again
fi

# Every copy complete; how the work was shared.
for i in $(seq 1 $((NODES - 1))); do
    for kind in $([ "$RUN_STAR" != 0 ] && echo star again) swarm; do
        jq -e '.complete == true' "$BASE/$kind-$i.json" >/dev/null || { echo "node $i: $kind copy incomplete" >&2; exit 1; }
    done
done
origin_chunks=$(cat "$BASE"/swarm-*.json | jq -s --arg o "$ORIGIN" '[.[].report.served_by[$o] // 0] | add')
total_chunks=$(cat "$BASE"/swarm-*.json | jq -s '[.[].report.served_by[]] | add')
holders=$(cat "$BASE"/swarm-*.json | jq -s '[.[].report.served_by | length] | add / length')

printf 'per-fetcher swarm times (ms): %s\n' "$(cat "$BASE"/swarm-*.json | jq -s -r '[.[].report.elapsed_ms] | sort | map(tostring) | join(" ")')" >&2
printf 'mesh swarm benchmark: %d nodes, %d MiB blob, uplinks %s (tbf, %s queue), %s, %d cores, %s worker threads per node\n' \
    "$NODES" "$MIB" "$RATE" "$TBF_LATENCY" "$TRANSPORT" "$(nproc)" "$([ "$THREADS" = 0 ] && echo "$(nproc)" || echo "$THREADS")"
if [ "$RUN_STAR" != 0 ]; then
    printf '  star  (origin to each peer in turn): %6.2f s  (nodes used %.1f CPU-s)\n' "$STAR" "$STAR_CPU"
fi
printf '  swarm (all fetch at once):           %6.2f s  (nodes used %.1f CPU-s)\n' "$FRESH" "$FRESH_CPU"
if [ "$RUN_STAR" != 0 ]; then
    printf '  swarm again, after the star:         %6.2f s  (nodes used %.1f CPU-s)\n' "$SWARM" "$SWARM_CPU"
    printf '  idle mesh: %.2f CPU-s per second; transfer CPU net of idle: star %.1f, swarm %.1f CPU-s\n' \
        "$IDLE_RATE" "$(echo "$STAR_CPU - $IDLE_RATE * $STAR" | bc -l)" "$(echo "$FRESH_CPU - $IDLE_RATE * $FRESH" | bc -l)"
    printf '  swarm / star: %.3f (target <= 0.2); swarm again / star: %.3f\n' \
        "$(echo "$FRESH / $STAR" | bc -l)" "$(echo "$SWARM / $STAR" | bc -l)"
else
    printf '  idle mesh: %.2f CPU-s per second; star not run (QM_STAR=0)\n' "$IDLE_RATE"
fi
printf '  origin served %s of %s chunk transfers in the swarm; a fetcher used %.1f holders on average\n' \
    "$origin_chunks" "$total_chunks" "$holders"
