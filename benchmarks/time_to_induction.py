"""Wall-clock seconds and tokens until a 2-layer model first shows induction, read from its log.

Thresholds (issue "CPU preset fast enough..."): a layer-0 head with previous-token score >= 0.5 and a
layer-1 head with prefix-matching score >= 0.4 (Olsson et al.'s protocol, circuits.metrics.olsson; circuits.metrics.heads.has_induction), both
measured at the same evaluation. The log's elapsed_s is wall-clock time of the run, evaluations included.

    python benchmarks/time_to_induction.py [path/to/log.jsonl]     # default: the preset's 2L model

Last line: seconds=<s> tokens=<n> step=<k>   (or "not reached" with the best scores seen)
"""

from __future__ import annotations

import sys
from pathlib import Path

from circuits.config import get_preset
from circuits.model.published import model_dir
from circuits.train.log import eval_rows, first_induction, read_log


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else model_dir(2, get_preset()) / "log.jsonl"
    rows = read_log(path)
    found = first_induction(rows)
    print(f"log: {path}")
    if found is None:
        ev = eval_rows(rows)
        print(f"not reached: best layer-0 previous-token {max(r['prev_token_best_l0'] for r in ev):.3f}, "
              f"best last-layer prefix-matching {max(r['prefix_matching_best_last'] for r in ev):.3f}")
        sys.exit(1)
    print(f"previous-token {max(found['prev_token'][0]):.3f}, prefix-matching {max(found['prefix_matching'][-1]):.3f}")
    print(f"seconds={found['elapsed_s']:.0f} tokens={found['tokens']} step={found['step']}")


if __name__ == "__main__":
    main()
