#!/usr/bin/env bash
# Runs `make test` N times (default 10), each in a new clone of this repository's HEAD, one after
# the other, and prints each run's wall time, the median and the maximum. A new clone has no
# .venv or .venv-scan, so each run builds both (pip's download cache, if the machine has one,
# is used as on any machine). Usage: tools/fresh_clone_runs.sh [N] [log directory]
set -uo pipefail
runs=${1:-10}
logs=${2:-$(mktemp -d -t ops-autopilot-runs-XXXX)}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --short HEAD)
mkdir -p "$logs"
echo "commit $commit, $runs fresh clones, $(nproc) cores; logs in $logs"
times=()
failed=0
for i in $(seq 1 "$runs"); do
    clone=$(mktemp -d -t ops-autopilot-clone-XXXX)
    git clone --quiet "$repo" "$clone"
    start=$(date +%s)
    (cd "$clone" && make test) > "$logs/run-$i.log" 2>&1
    rc=$?
    seconds=$(( $(date +%s) - start ))
    summary=$(grep -E '^[0-9]+ passed|passed|failed' "$logs/run-$i.log" | tail -1)
    echo "run $i: rc=$rc ${seconds} s  $summary"
    times+=("$seconds")
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
    rm -rf "$clone"
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
n=${#sorted[@]}
if (( n % 2 )); then median=${sorted[$((n / 2))]}; else median=$(( (sorted[n / 2 - 1] + sorted[n / 2]) / 2 )); fi
echo "runs: $n, failed: $failed, median ${median} s, max ${sorted[$((n - 1))]} s"
exit $(( failed > 0 ))
