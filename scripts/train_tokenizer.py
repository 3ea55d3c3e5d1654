"""Train a byte-level BPE on the train split of the embedded corpus (by default the presets' ``bpe4k``).

    python scripts/train_tokenizer.py                     # writes data/tokenizer/bpe4k/ (~15 s on 2 cores)
    python scripts/train_tokenizer.py --vocab-size 8192   # writes data/tokenizer/bpe8k/ (the earlier trials')
"""

from __future__ import annotations

import argparse
import time

from circuits.data.corpus import load_corpus
from circuits.data.tokenizer import TOKENIZER_DIR, bpe_name, save_bpe, train_bpe


def main(vocab_size: int = 4096) -> None:
    name = bpe_name(vocab_size)
    train = load_corpus("embedded")["train"]
    start = time.time()
    tok = train_bpe((train[i:i + 1000]["text"] for i in range(0, len(train), 1000)), vocab_size)
    # train_from_iterator accepts batches (lists of strings) as well as single strings
    save_bpe(tok, TOKENIZER_DIR / name)
    print(f"trained {tok.get_vocab_size()} tokens into {TOKENIZER_DIR / name} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-size", type=int, default=4096, help="a multiple of 1024")
    main(ap.parse_args().vocab_size)
