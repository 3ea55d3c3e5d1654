#!/usr/bin/env bash
# The GPU checks in one short run, for a lent GPU box (CI has no GPU): about 10 minutes of device time.
#
#   bash scripts/device_check.sh [sections...]     sections: env tests throughput standin book (default: all)
#
# What it needs there: python3 with torch (the box's own build is fine; its version is logged); for `book`,
# jupyter-book, myst-nb, plotly and nbformat, which can travel as wheels in .whl/ (scripts/device_wheels.sh
# downloads them here; the run installs them into /tmp/site). The box has no network: the paper preset trains on
# the embedded corpus tokenized with GPT-2's BPE (CIRCUITS_DATA=embedded, the stand-in for OpenWebText).
# Everything it prints goes to $OUT (default /tmp/device_check) as one log per section, plus summary.txt:
# the GPU, the torch build, tokens/s and MFU, the stand-in runs' losses and the book's build seconds.
# Copy $OUT's files to benchmarks/logs/ (prefixed with the GPU's name and the date) and note them in HISTORY.md.
set -uo pipefail
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }

env_() {
    summary "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
    summary "torch: $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
    summary "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
}
tests() {  # the CUDA tests, then the model, kernel and training tests on this box's CPU and GPU
    python3 -m pytest -o addopts="" -q -p no:cacheprovider tests/kernels tests/model/test_transformer.py \
        tests/train/test_loop.py 2>&1 | tee "$OUT/pytest.log" | tail -15
    summary "tests: $(tail -1 "$OUT/pytest.log")"
}
throughput() {  # the paper preset's training step against TransformerLens, with the bf16 peak timed in the run
    python3 benchmarks/train_throughput.py --device cuda --preset paper --steps 10 --repeats 3 2>&1 \
        | grep -v Warning | tee "$OUT/throughput_paper.log"
    summary "throughput (paper preset): $(tail -1 "$OUT/throughput_paper.log")"
}
standin() {  # paper-size 0/1/2-layer models, trained briefly on the stand-in data, for the book below
    export CIRCUITS_DATA=embedded
    python3 -m circuits.cli tokens --preset paper 2>&1 | tail -1
    python3 -m circuits.cli train --preset paper --layers 2 1 0 \
        --set total_tokens.0=4e6 total_tokens.1=8e6 total_tokens.2=16e6 train.warmup_steps=20 \
        train.eval_every=40 train.checkpoint_every=100 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -20 \
        | tee "$OUT/standin_train.log"
    for n in 0 1 2; do
        cp runs/paper-embedded/${n}l/log.jsonl "$OUT/standin_paper_${n}l_log.jsonl"
        summary "stand-in ${n}L: $(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'val_loss' in l][-1]; print(f\"{r['tokens']:,} tokens, val {r['val_loss']:.3f}, {r['elapsed_s']:.0f} s, {r['data']}\")" runs/paper-embedded/${n}l/log.jsonl)"
    done
}
book() {  # every chapter at paper size, on the stand-in models (CIRCUITS_TRAIN=1 reads runs/, trains nothing new)
    if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
    fi
    mkdir -p _static
    cp "$(python3 -c 'import pathlib, plotly; print(pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js")')" _static/
    SECONDS=0
    CIRCUITS_PRESET=paper CIRCUITS_DATA=embedded CIRCUITS_TRAIN=1 python3 -m jupyter_book build . --all -W \
        --keep-going 2>&1 | grep -v "Kernel is running" | tee "$OUT/book_paper.log" | tail -25
    summary "book at paper size: $SECONDS s, $(grep -c 'WARNING' "$OUT/book_paper.log") warnings; $(grep -A0 ' total ' "$OUT/book_paper.log")"
}
for section in "${@:-env_ tests throughput standin book}"; do
    for s in $section; do
        [ "$s" = env ] && s=env_
        echo "== $s"; SECONDS=0; $s; echo "== $s took $SECONDS s" | tee -a "$OUT/summary.txt"
    done
done
