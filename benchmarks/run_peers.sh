#!/usr/bin/env bash
# run_peers.sh -- run the shared peer harness (shared/bench/peers.py) for rayipy and its
# peers in ONE run, so the figures are comparable on this noisy 2-core machine, then print
# its markdown table.
#
# Usage (from anywhere):
#   benchmarks/run_peers.sh                      # ray,rayipy, 3 reps, into /tmp/rayipy-peers-<date>
#   benchmarks/run_peers.sh --quick              # smoke run (small counts)
#   benchmarks/run_peers.sh --systems ray,rayipy,dask,loky
#   benchmarks/run_peers.sh --out-dir /tmp/x --reps 5
#   benchmarks/run_peers.sh --rayipy-rev HEAD    # measure rayipy as committed at HEAD: a frozen
#                                                # `git archive` copy first on PYTHONPATH, so commits
#                                                # or edits made by others during the run don't mix in
#
# Every other argument is passed to peers.py as is (--reps, --timeout, ...).
# Environment:
#   PYTHON    the venv python that has ray, dask, ... and rayipy installed
#             (default /work/peers-venv/bin/python; see benchmarks/README.md)
#   PEERS_PY  the harness (default: shared/bench/peers.py beside this repository)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
PYTHON="${PYTHON:-/work/peers-venv/bin/python}"
PEERS_PY="${PEERS_PY:-}"
if [[ -z "$PEERS_PY" ]]; then
    for cand in "$repo/../shared/bench/peers.py" "$repo/shared/bench/peers.py" /work/shared/bench/peers.py; do
        if [[ -f "$cand" ]]; then PEERS_PY="$(cd "$(dirname "$cand")" && pwd)/peers.py"; break; fi
    done
fi
[[ -n "$PEERS_PY" && -f "$PEERS_PY" ]] || { echo "peers.py not found; set PEERS_PY=/path/to/peers.py" >&2; exit 2; }
[[ -x "$PYTHON" ]] || { echo "python not found at $PYTHON; create the venv (benchmarks/README.md) or set PYTHON" >&2; exit 2; }

systems="ray,rayipy"
out_dir=""
quick=0
rev=""
timeout=900
pass=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --systems) systems="$2"; shift 2 ;;
        --systems=*) systems="${1#*=}"; shift ;;
        --out-dir) out_dir="$2"; shift 2 ;;
        --out-dir=*) out_dir="${1#*=}"; shift ;;
        --timeout) timeout="$2"; shift 2 ;;
        --timeout=*) timeout="${1#*=}"; shift ;;
        --quick) quick=1; pass+=("--quick"); shift ;;
        --rayipy-rev) rev="$2"; shift 2 ;;
        --rayipy-rev=*) rev="${1#*=}"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) pass+=("$1"); shift ;;
    esac
done
if [[ -z "$out_dir" ]]; then
    tag="$(date -u +%Y%m%d-%H%M%S)"
    if [[ $quick == 1 ]]; then out_dir="/tmp/rayipy-peers-quick-$tag"; else out_dir="/tmp/rayipy-peers-$tag"; fi
fi
mkdir -p "$out_dir"

if [[ -n "$rev" ]]; then
    sha="$(git -C "$repo" rev-parse --verify "$rev^{commit}")"
    src="/tmp/rayipy-src-${sha:0:12}"
    if [[ ! -d "$src/rayipy" ]]; then
        mkdir -p "$src.tmp$$"
        git -C "$repo" archive "$sha" rayipy | tar -x -C "$src.tmp$$"
        mv "$src.tmp$$" "$src"
    fi
    export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"
    echo "# rayipy from commit ${sha:0:12} (frozen copy in $src)" >&2
else
    dirty="$(git -C "$repo" status --porcelain -- rayipy 2>/dev/null || true)"
    echo "# rayipy from the working tree $repo, HEAD $(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null)${dirty:+, with uncommitted changes in rayipy/}" >&2
fi
# (from /tmp, as peers.py's children import it: not from the current directory)
(cd /tmp && "$PYTHON" -c 'import rayipy, os; print("# rayipy imported from", os.path.dirname(rayipy.__file__))') >&2 || true

export RAY_USAGE_STATS_ENABLED=0
# peers.py must run from the project's root (see its docstring); its children run in /tmp/peers-run.
cd "$repo"
echo "# $PYTHON $PEERS_PY --systems $systems --timeout $timeout --out-dir $out_dir ${pass[*]:-}" >&2
set +e
"$PYTHON" "$PEERS_PY" --systems "$systems" --timeout "$timeout" --out-dir "$out_dir" "${pass[@]}"
rc=$?
set -e
echo
if [[ -f "$out_dir/peers-results.md" ]]; then
    cat "$out_dir/peers-results.md"
    echo
    [[ -n "$rev" ]] && echo "rayipy measured: commit $sha (frozen copy $src)"
    echo "results: $out_dir/peers-results.md  $out_dir/peers-results.json  logs: $out_dir/logs/"
else
    echo "no table was written (peers.py exit code $rc); see $out_dir/logs/" >&2
fi
exit $rc
