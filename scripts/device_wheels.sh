#!/usr/bin/env bash
# Download here the wheels the device check's book build needs on a GPU box without a network (into .whl/,
# which .git/info/exclude keeps out of git; pass `carry: [".whl"]` to the device call). Python 3.12 wheels for
# manylinux x86-64, as the lent boxes run. The set is what jupyter-book 1 needs beside the box's torch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q -d .whl --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "jupyter-book==1.0.4.post1" "plotly==7.1.0" "einops==0.8.2" "safetensors==0.8.0" "tokenizers==0.23.3" \
    "transformers==5.24.0" "datasets==5.2.0" "pyarrow==26.0.1" "tqdm==4.70.1" "ipykernel" "nbclient"
du -sh .whl
