"""Train the ``bpe8k`` byte-level BPE on the train split of the embedded corpus.

    python scripts/train_tokenizer.py     # writes data/tokenizer/bpe8k/ (~20 s on 2 cores)
"""

from __future__ import annotations

import time

from circuits.corpus import load_corpus
from circuits.tokenizer import TOKENIZER_DIR, save_bpe, train_bpe


def main(vocab_size: int = 8192) -> None:
    train = load_corpus("embedded")["train"]
    start = time.time()
    tok = train_bpe((train[i:i + 1000]["text"] for i in range(0, len(train), 1000)), vocab_size)
    # train_from_iterator accepts batches (lists of strings) as well as single strings
    save_bpe(tok, TOKENIZER_DIR / "bpe8k")
    print(f"trained {tok.get_vocab_size()} tokens in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
