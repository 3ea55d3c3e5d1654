"""A held-out passage worth looking at: the window of text in which one name recurs most often, where an
induction head has the most to do (the two-layer chapter's attention figures)."""

from __future__ import annotations

import re

from .corpus import load_corpus
from .tokenizer import load_tokenizer


def most_repeated_name(text: str, min_len: int = 4) -> tuple[str | None, int]:
    """The capitalised word (>= ``min_len`` letters) that recurs most in ``text`` and never appears in
    lower case there (so names, not sentence-initial words), with its count; ``(None, 0)`` if none."""
    lower = set(re.findall(r"\b[a-z]+\b", text))
    counts: dict[str, int] = {}
    for word in re.findall(r"\b[A-Z][a-z]{%d,}\b" % (min_len - 1), text):
        if word.lower() not in lower:
            counts[word] = counts.get(word, 0) + 1
    if not counts:
        return None, 0
    name = max(counts, key=lambda w: (counts[w], -text.index(w)))  # ties: the earliest
    return name, counts[name]


def find_repeated_passage(docs, tokenizer, n_tokens: int = 200, source: str | None = None) -> dict | None:
    """The window of ``n_tokens`` tokens (stride n_tokens // 4, starting at a sentence where possible)
    in which one name recurs most often.

    docs: rows with ``text``, ``source``, ``doc_id`` (e.g. a corpus split); tokenizer: a Hugging Face
    tokenizer. Returns ``doc_id``, ``source``, ``start`` (token offset), ``token_ids``, ``tokens_str``
    (one string per token), ``text``, ``name``, ``count``; None when no window has a name.
    """
    best = None
    for doc in docs:
        if source is not None and doc["source"] != source:
            continue
        ids = tokenizer.encode(doc["text"], add_special_tokens=False)
        ends = [tokenizer.decode([i]).rstrip(" \"'").endswith((".", "!", "?", "\n")) for i in ids]
        starts = {next((j for j in range(s, min(s + n_tokens // 4, len(ids))) if j == 0 or ends[j - 1]), s)
                  for s in range(0, max(1, len(ids) - n_tokens + 1), max(1, n_tokens // 4))}
        for start in sorted(starts):  # each snapped forward to a sentence start when one is near
            window = ids[start:start + n_tokens]
            name, count = most_repeated_name(tokenizer.decode(window))
            if count and (best is None or count > best["count"]):
                best = {"doc_id": doc["doc_id"], "source": doc["source"], "start": start,
                        "token_ids": window, "name": name, "count": count}
    if best is not None:
        best["tokens_str"] = [tokenizer.decode([i]) for i in best["token_ids"]]
        best["text"] = "".join(best["tokens_str"])
    return best


def repeated_passage(data, n_tokens: int = 200, source: str | None = "janeaustenr") -> dict | None:
    """``find_repeated_passage`` over the validation split of a preset's corpus (held-out text), tokenized
    with the preset's tokenizer (``data``: its ``DataConfig``), e.g. a Jane Austen chapter where a
    character's name recurs. ``n_tokens`` must not exceed the model's n_ctx."""
    return find_repeated_passage(load_corpus(data.corpus)["validation"], load_tokenizer(data.tokenizer),
                                 n_tokens, source)
