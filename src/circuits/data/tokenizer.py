"""Tokenizers: our byte-level BPEs (``bpe4k``, used by the presets; ``bpe8k``, used by the earlier trials; any
other ``bpe<N>k`` trained by ``scripts/train_tokenizer.py``) and GPT-2's, all from files in ``data/tokenizer``.

Nothing here touches the network unless ``hub_id`` is passed explicitly.
``<|endoftext|>`` separates documents (and starts the text) in all; it is id 0 in our BPEs
and 50256 in ``gpt2``, so code must use ``tokenizer.eos_token_id`` rather than a constant.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from circuits.paths import data_dir

TOKENIZER_DIR = data_dir() / "tokenizer"
EOS = "<|endoftext|>"
TOKENIZERS = ("bpe4k", "bpe8k", "gpt2")  # committed; other bpe<N>k are local trials
BPE_NAME = re.compile(r"bpe(\d+)k")


def bpe_name(vocab_size: int) -> str:
    """``bpe4k`` for 4096: the directory name of our BPE with ``vocab_size`` tokens (a multiple of 1024)."""
    if vocab_size <= 0 or vocab_size % 1024:
        raise ValueError(f"vocab_size {vocab_size} is not a positive multiple of 1024")
    return f"bpe{vocab_size // 1024}k"


def _byte_level(model: models.Model) -> Tokenizer:
    """GPT-2's byte-level pipeline around ``model``: every string encodes, and decodes exactly."""
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on ``texts``; ``<|endoftext|>`` is special token 0."""
    tok = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(EOS) == 0
    return tok


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS,
                                   unk_token=EOS, pad_token=EOS)
    fast.model_max_length = 10**9  # documents are long; windows are cut later, not here
    return fast


def save_bpe(tok: Tokenizer, directory: Path) -> None:
    """``tokenizer.json`` plus the config files ``transformers`` reads back."""
    directory.mkdir(parents=True, exist_ok=True)
    _wrap(tok).save_pretrained(str(directory))


def load_tokenizer(name: str, hub_id: str | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer ``name`` ("bpe4k", another "bpe<N>k", or "gpt2") from local files, offline.

    ``hub_id`` (e.g. ``"gpt2"``) loads from the Hugging Face hub instead; never the default.
    """
    if hub_id is not None:
        fast = AutoTokenizer.from_pretrained(hub_id)
    elif bpe := BPE_NAME.fullmatch(name):
        path = TOKENIZER_DIR / name / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; train it with "
                                    f"`python scripts/train_tokenizer.py --vocab-size {int(bpe.group(1)) * 1024}`")
        fast = _wrap(Tokenizer.from_file(str(path)))
    elif name == "gpt2":
        d = TOKENIZER_DIR / "gpt2"
        fast = _wrap(_byte_level(models.BPE.from_file(str(d / "vocab.json"),
                                                      str(d / "merges.txt"))))
    else:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {TOKENIZERS} or another bpe<N>k")
    if fast.eos_token_id is None:
        raise ValueError(f"tokenizer {hub_id or name} has no end-of-text token")
    return fast


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable bytes stand for themselves, the other 68 are
    moved to the characters from U+0100 on, in byte order (the ``ByteLevel`` pre-tokenizer of all our BPEs)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTES = _byte_level_alphabet()


def token_bytes(tokenizer, token: int) -> bytes:
    """The raw bytes of one token of a byte-level BPE (a token may hold part of a UTF-8 character, which
    ``decode`` would turn into "\ufffd"); special tokens give their text's bytes."""
    piece = tokenizer.convert_ids_to_tokens(int(token))
    if piece in tokenizer.all_special_tokens or any(c not in _BYTES for c in piece):
        return tokenizer.decode([int(token)]).encode("utf-8")
    return bytes(_BYTES[c] for c in piece)
