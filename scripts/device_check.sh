#!/usr/bin/env bash
# The GPU checks in one short run (for a lent GPU box; CI has no GPU). Expects data/tokens/embedded-bpe4k
# prepared (python -m circuits.cli tokens --preset cpu) and python3 with torch; writes logs to $OUT.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -o addopts="" -q -p no:cacheprovider tests/test_cuda.py tests/test_unembed_loss.py \
    tests/test_model.py tests/test_precision.py 2>&1 | tee "$OUT/pytest.log" | tail -15
python3 benchmarks/train_throughput.py --device cuda --preset paper --steps 10 --repeats 3 2>&1 \
    | grep -v Warning | tee "$OUT/throughput_paper.log"
python3 benchmarks/train_throughput.py --device cuda --preset paper --steps 10 --repeats 3 --eager-loss 2>&1 \
    | grep -v Warning | tee "$OUT/throughput_paper_eager_loss.log"
python3 benchmarks/train_throughput.py --device cuda --preset cpu --steps 20 --repeats 3 2>&1 \
    | grep -v Warning | tee "$OUT/throughput_cpu.log"
python3 scripts/induction_run.py --preset cpu --layers 2 --run-dir runs/gpu-cpu/2l 2>&1 | tail -c 600
cp runs/gpu-cpu/2l/log.jsonl "$OUT/gpu_cpu_2l_log.jsonl"
python3 benchmarks/time_to_induction.py runs/gpu-cpu/2l/log.jsonl 2>&1 | tee "$OUT/time_to_induction.log"
# seeds, 8 and 12 heads, eager and compiled loss: scripts/device_seeds.sh
