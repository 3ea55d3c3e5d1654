"""Command line: ``python -m circuits.cli train|publish|tokens``.

    python -m circuits.cli train --preset cpu --layers 0 1 2
    torchrun --nproc_per_node 8 -m circuits.cli train --preset paper --layers 2
    python -m circuits.cli publish --preset cpu --layers 0 1 2 --snapshots 4

The published cpu models (benchmarks/HISTORY.md, trial 42) were trained with ``train --preset cpu --layers 2 1 0``
and published without snapshots (the book reads the training logs) with

    python -m circuits.cli publish --preset cpu --layers 0 1 2
"""

from __future__ import annotations

import argparse

from circuits.config import PRESETS, add_overrides_argument, get_preset, override


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m circuits.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "publish", "tokens"])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="default: $CIRCUITS_PRESET, else cpu (paper where CUDA is present)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default=None, metavar="embedded|openwebtext|PATH",
                        help="the training data (default: $CIRCUITS_DATA, else the preset's): the embedded corpus "
                             "(the stand-in for OpenWebText without a network), OpenWebText from the hub, or a local "
                             "copy of it (parquet, arrow or text files)")
    parser.add_argument("--snapshots", type=int, default=0, help="snapshots to publish per model")
    parser.add_argument("--snapshot-steps", type=int, nargs="+", default=None,
                        help="publish exactly the snapshots at these steps (instead of --snapshots)")
    add_overrides_argument(parser)
    args = parser.parse_args(argv)
    try:
        preset = override(get_preset(args.preset, args.data), args.set)
    except ValueError as err:
        parser.error(str(err))

    from circuits.data.tokens import preset_tokens
    from circuits.train import runs

    if args.command == "tokens":
        tokens = preset_tokens(preset)
        print({k: len(v) for k, v in tokens.items()})
    for n in args.layers if args.command != "tokens" else []:
        if args.command == "train":
            print(f"trained: {runs.train_preset(n, preset)}")
        else:
            print(f"published: {runs.publish(n, preset, args.snapshots, args.snapshot_steps)}")


if __name__ == "__main__":
    main()
