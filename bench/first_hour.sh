#!/usr/bin/env bash
# A newcomer's first minutes, timed: clone, `scripts/up`, then the README's tour command twice.
#
#   bench/first_hour.sh [REPO] [WORKDIR]     (defaults: this repository, a new temp folder)
#
# Prints seconds from starting scripts/up to its "try:" line (virtualenv install included), to
# the tour's image, and the second tour (warm worker) as the baseline the first is compared to.
# Port 8000 must be free, as it is for a newcomer. Everything started here is stopped on exit.
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
work=${2:-$(mktemp -d)}
git clone -q "$repo" "$work/clone"
cd "$work/clone"
seconds() { date +%s.%N; }
t0=$(seconds)
scripts/up > "$work/up.log" 2>&1 &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null || true' EXIT
until grep -q '^try:' "$work/up.log"; do
  kill -0 $up 2>/dev/null || { cat "$work/up.log"; exit 1; }
  sleep 1
done
t1=$(seconds)
# shellcheck disable=SC1091
source .venv/bin/activate
tour='imagefleet submit "a lighthouse at dawn" --model demo --width 576 --height 1024 --steps 20 --wait -o out/'
eval "$tour" > "$work/tour1.log"
t2=$(seconds)
eval "$tour" > "$work/tour2.log"
t3=$(seconds)
cat "$work/tour1.log" "$work/tour2.log"
python3 - "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:])
print(f"scripts/up ready: {t1 - t0:.0f} s; tour's image: {t2 - t0:.0f} s after scripts/up")
print(f"first tour {t2 - t1:.1f} s, second tour {t3 - t2:.1f} s ({(t2 - t1) / (t3 - t2):.1f}x)")
PY
