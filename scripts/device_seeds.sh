#!/usr/bin/env bash
# Seed sweep of the cpu preset on a lent GPU box, several runs side by side on one GPU (MPS when the
# box has it): does the 12-head preset grow induction heads for every seed, where 8 heads did not, and
# does the compiled loss chain (unembed_loss.COMPILED_ON, now the default) change that? Expects data/tokens/embedded-bpe4k
# carried; writes $OUT/seeds.tar.gz (all logs), $OUT/seed_sweep.jsonl and $OUT/summary.txt. Usage: device_seeds.sh [seconds]
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
OUT=${OUT:-/tmp/device_seeds}
BUDGET=${1:-420}
mkdir -p "$OUT" runs/seeds
nvidia-smi -L
nvidia-cuda-mps-control -d 2>/dev/null && echo "MPS on" || echo "no MPS"
[ -n "${SKIP_TESTS:-}" ] || python3 -m pytest -o addopts="" -q -p no:cacheprovider tests/kernels/test_cuda.py 2>&1 | tail -3
# name heads seed compiled, in order of priority (whatever the budget cuts stays partial in its log)
# SEEDS="8 9 ..." and COMPILED_SEEDS="4 5 ..." pick a second wave; JOBS="name heads seed compiled d_head;..."
# replaces the list (e.g. "h16x16c-s0 16 0 1 16"; names as benchmarks/seed_sweep.py reads them)
jobs() {
    if [ -n "${JOBS:-}" ]; then tr ';' '\n' <<< "$JOBS"; return; fi
    for s in ${SEEDS:-0 1 2 3 4 5 6 7}; do echo "h12-s$s 12 $s 0"; done
    for s in ${SEEDS:-4 5 6 7 0 1 2 3}; do echo "h8-s$s 8 $s 0"; done
    for s in ${COMPILED_SEEDS:-0 1 2 3}; do echo "h12c-s$s 12 $s 1"; done
}
run_one() {
    set -- $1
    local flag="--eager-loss"; [ "$4" = 1 ] && flag=""
    python3 scripts/induction_run.py --preset cpu --layers 2 --run-dir "runs/seeds/$1" \
        --set n_heads="$2" train.seed="$3" d_head="${5:-32}" $flag > "runs/seeds/$1.out" 2>&1
}
export -f run_one
jobs | timeout "$BUDGET" xargs -P "${PARALLEL:-6}" -I{} bash -c 'run_one "{}"'
echo "sweep ended after $SECONDS s"
python3 benchmarks/seed_sweep.py runs/seeds --write "$OUT/seed_sweep.jsonl" | tee "$OUT/summary.txt"
tar czf "$OUT/seeds.tar.gz" runs/seeds/*/log.jsonl runs/seeds/*.out
