#!/usr/bin/env bash
# Records the dashboard filling up during a real demo run, as an animated GIF (docs/demo.gif):
# runs scripts/demo.sh --stay, takes a screenshot of the requester node's dashboard every
# --interval seconds with headless Chromium (scripts/record-demo.mjs, playwright-core) until the
# job has finished, then joins the frames with Python's Pillow (installed with pip if missing):
# one shared palette, identical frames merged, played --speed times faster than real time, the
# last frame held for 3 s. Stops everything it started, also on failure or Ctrl-C.
#
# Usage: scripts/record-demo.sh [--out FILE] [--interval SECS] [--speed X] [--width PX]
#                               [--contributors N] [--rounds R] [--keep-frames DIR]
#   --out FILE         the GIF to write (default docs/demo.gif)
#   --interval SECS    seconds between screenshots (default 1)
#   --speed X          playback speed-up (default 2)
#   --width PX         width of the GIF, scaled from a 1400x900 page (default 960)
#   --contributors N   demo contributors (default 2); --rounds R demo rounds (default 5)
#   --keep-frames DIR  also keep the PNG frames in DIR
# Environment: QUACKMESH_CHROMIUM (default /usr/bin/chromium).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
caller_pwd=$PWD
cd "$QM_ROOT"
out=docs/demo.gif
interval=1
speed=2
width=960
contributors=2
rounds=5
keep_frames=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --speed) speed="$2"; shift 2 ;;
    --width) width="$2"; shift 2 ;;
    --contributors) contributors="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --keep-frames) keep_frames="$2"; shift 2 ;;
    -h|--help) qm_usage "$0"; exit 0 ;;
    *) echo "record-demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ "$out" != /* ]]; then out="$caller_pwd/$out"; fi
if [[ -n "$keep_frames" && "$keep_frames" != /* ]]; then keep_frames="$caller_pwd/$keep_frames"; fi
say() { printf '\033[1m[record-demo]\033[0m %s\n' "$*"; }

chromium="${QUACKMESH_CHROMIUM:-/usr/bin/chromium}"
[[ -x "$chromium" ]] || { echo "record-demo.sh: no Chromium at $chromium (apt-get install chromium)" >&2; exit 1; }
[[ -f node_modules/playwright-core/package.json ]] \
  || { echo "record-demo.sh: node_modules/playwright-core missing; run scripts/setup.sh" >&2; exit 1; }
if ! python3 -c 'import PIL' 2>/dev/null; then
  say "installing Pillow (pip) to assemble the GIF"
  python3 -m pip install -q --disable-pip-version-check Pillow
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/quackmesh-record.XXXXXX")"
mkdir -p "$tmp/frames"
demo_pid=""
rec_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$rec_pid" ]]; then kill "$rec_pid" 2>/dev/null || true; wait "$rec_pid" 2>/dev/null || true; fi
  if [[ -n "$demo_pid" ]]; then
    kill "$demo_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$tmp/demo.log" ]]; then
    echo "--- the end of the demo's output:" >&2; tail -20 "$tmp/demo.log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "running scripts/demo.sh --stay --contributors $contributors --rounds $rounds"
setsid scripts/demo.sh --stay --contributors "$contributors" --rounds "$rounds" \
  --ready-file "$tmp/ready" >"$tmp/demo.log" 2>&1 </dev/null &
demo_pid=$!
interval_ms=$(python3 -c "print(int(float('$interval') * 1000))")
READY_FILE="$tmp/ready" FRAMES_DIR="$tmp/frames" INTERVAL_MS="$interval_ms" TAIL_MS=4000 \
  MAX_SECS=600 CHROMIUM="$chromium" timeout -k 5 660 node scripts/record-demo.mjs &
rec_pid=$!
rc=0
wait "$rec_pid" || rc=$?
rec_pid=""
[[ $rc -eq 0 ]] || { echo "record-demo.sh: recording failed (exit $rc)" >&2; exit 1; }
grep -E 'round [0-9]+: global accuracy|time taken' "$tmp/demo.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'

if [[ -n "$keep_frames" ]]; then mkdir -p "$keep_frames"; cp "$tmp"/frames/* "$keep_frames/"; fi
mkdir -p "$(dirname "$out")"
python3 - "$tmp/frames" "$out" "$speed" "$width" <<'EOF'
import glob, sys
from PIL import Image, ImageChops

frames_dir, out, speed, width = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
paths = sorted(glob.glob(f"{frames_dir}/frame-*.png"))
times = [int(t) for t in open(f"{frames_dir}/times.txt").read().split()]
assert paths and len(paths) == len(times), (len(paths), len(times))
frames, durations = [], []
for i, p in enumerate(paths):
    im = Image.open(p).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    shown = (times[i + 1] - times[i]) if i + 1 < len(times) else 0
    if frames and ImageChops.difference(frames[-1], im).getbbox() is None:
        durations[-1] += shown  # the same picture: show the previous frame longer
        continue
    frames.append(im)
    durations.append(shown)
durations = [max(40, round(d / speed)) for d in durations]
durations[-1] = 3000
# One palette for all frames, from the last (it has every colour: the chart, the tables).
palette = frames[-1].quantize(colors=128, method=Image.Quantize.MEDIANCUT)
quantized = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
quantized[0].save(out, save_all=True, append_images=quantized[1:], duration=durations, loop=0,
                  optimize=False, disposal=1)
total = sum(durations) / 1000
print(f"    {len(quantized)} distinct frames of {len(paths)}, {total:.1f} s at {speed:g}x")
EOF
say "wrote $out ($(du -h "$out" | cut -f1))"
