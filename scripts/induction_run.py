"""Train one preset model on already-prepared token memmaps, on whatever device is present.

For machines that have torch but not HF ``datasets`` (which only preparing tokens needs), e.g. a lent GPU box:
prepare ``data/tokens/<corpus>-<tokenizer>/`` here (``python -m circuits.cli tokens``), carry it, then

    python scripts/induction_run.py --preset cpu --layers 2 --run-dir runs/gpu-cpu/2l
    python scripts/induction_run.py --preset cpu --layers 2 --run-dir runs/trial/2l --set d_model=128 d_head=16
    python benchmarks/time_to_induction.py runs/gpu-cpu/2l/log.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.kernels import unembed_loss
from circuits.config import add_overrides_argument, preset_from_args
from circuits.model.published import tokenizer_meta
from circuits.data.tokens import TOKENS_DIR, load_tokens
from circuits.train.loop import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--stop-at-step", type=int, default=None)
    add_overrides_argument(ap)
    ap.add_argument("--eager-loss", action="store_true",
                    help="the fused loss's chunk chain eagerly on GPU too (default: compiled, unembed_loss.COMPILED_ON)")
    args = ap.parse_args()
    if args.eager_loss:
        unembed_loss.COMPILED_ON = ()
    preset = preset_from_args(ap, args)
    directory = TOKENS_DIR / f"{preset.data.corpus}-{preset.data.tokenizer}"
    tokens = {split: load_tokens(directory, split) for split in ("train", "validation")}
    train(preset.model_config(args.layers), preset.train_config(args.layers), tokens, args.run_dir,
          data_cfg=preset.data, stop_at_step=args.stop_at_step, model_meta=tokenizer_meta(preset))


if __name__ == "__main__":
    main()
