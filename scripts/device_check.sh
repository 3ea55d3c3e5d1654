#!/usr/bin/env bash
# The GPU checks in one short run (for a lent GPU box; CI has no GPU). Expects data/tokens/embedded-bpe4k
# prepared (python -m circuits.cli tokens --preset cpu) and python3 with torch; writes logs to $OUT.
# Usage: device_check.sh [sections...]   sections: tests ddp scan throughput induction (default: all)
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
grep -m1 "model name" /proc/cpuinfo; grep -o -w 'avx2\|avx512f\|amx_bf16' /proc/cpuinfo | sort | uniq -c; cc --version | head -1
tests() {
    python3 -m pytest -o addopts="" -q -p no:cacheprovider tests/test_cuda.py tests/test_unembed_loss.py \
        tests/test_model.py tests/test_precision.py tests/test_train.py tests/test_cpu_attention.py 2>&1 | tee "$OUT/pytest.log" | tail -15
}
ddp() {  # DDP over NCCL: torchrun with one process joins a process group (train.distributed_setup)
    local run=runs/gpu-ddp/2l
    python3 -m torch.distributed.run --standalone --nproc_per_node 1 scripts/induction_run.py --preset cpu \
        --layers 2 --run-dir $run --stop-at-step 400 2>&1 | tail -c 400
    python3 -m torch.distributed.run --standalone --nproc_per_node 1 scripts/induction_run.py --preset cpu \
        --layers 2 --run-dir $run 2>&1 | tail -c 400  # resumes from step 400
    cp $run/log.jsonl "$OUT/gpu_ddp_cpu_2l_log.jsonl"
    python3 benchmarks/time_to_induction.py $run/log.jsonl 2>&1 | tee "$OUT/ddp_time_to_induction.log"
}
scan() {
    python3 benchmarks/circuit_analysis.py --device cuda 2>&1 | tee "$OUT/circuit_analysis_cuda.log"
}
throughput() {
    for preset in paper cpu; do
        python3 benchmarks/train_throughput.py --device cuda --preset $preset --steps 10 --repeats 3 2>&1 \
            | grep -v Warning | tee "$OUT/throughput_$preset.log"
    done
}
induction() {
    python3 scripts/induction_run.py --preset cpu --layers 2 --run-dir runs/gpu-cpu/2l 2>&1 | tail -c 600
    cp runs/gpu-cpu/2l/log.jsonl "$OUT/gpu_cpu_2l_log.jsonl"
    python3 benchmarks/time_to_induction.py runs/gpu-cpu/2l/log.jsonl 2>&1 | tee "$OUT/time_to_induction.log"
}
for section in "${@:-tests ddp scan throughput induction}"; do
    for s in $section; do echo "== $s"; SECONDS=0; $s; echo "== $s took $SECONDS s"; done
done
# seeds, 8 and 12 heads, eager and compiled loss: scripts/device_seeds.sh
