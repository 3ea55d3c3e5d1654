"""The one-layer chapter's skip-trigrams tested on real text (paper "One-Layer Attention-Only Transformers",
"Other Interesting Skip-Trigrams", "Skip-Trigram 'Bugs'" and "Copying / Primitive In-Context Learning"): the
paper's named skip-trigrams (``paper_examples``), its own bug ``keep … in → bay`` (``keep_bug``), the automatic
bug search (``bug_search``) and copying across tokenisations (``split_word_search``). ``findings.one_layer``
calls them once per build and keeps their rows in its results; the rows hold token ids.

Rules (each findings row states its own in words, in its ``rule`` field):
- a head *supports* a skip-trigram ``source … dest → out`` when the output ranks in the top ``top_rank``
  of the source's OV column and the destination in the top ``top_rank`` of the destinations that prefer the
  source (``skip_trigrams.skip_trigram_support``; ``top_rank`` is ``TOP_FRACTION`` of the frequent tokens,
  at least ``MIN_TOP``); the *best head* is the one whose worse rank of the two is smallest;
- the *model raises* a continuation when, with the source inserted into real text, its log-probability is
  higher than with control words in the same place by at least ``MIN_EFFECT`` nats on average over the
  ``N_CONTEXTS`` contexts, and by more than ``MIN_Z`` standard errors of that paired difference
  (``skip_trigram_effect.skip_trigram_effect``);
- a head *carries* the model's effect when it makes at least ``CARRY_SHARE`` of the rise of the output's
  logit (the rise splits exactly over the heads in a one-layer model);
- a named example is *reproduced* when a head supports it and the model raises it, *partly* when one of the
  two holds, *not reproduced* when neither does, *not testable* when one of its tokens is not a single token
  of this tokenizer or is seen fewer than ``MIN_COUNT`` times in the train split (``findings.one_layer``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from circuits.analysis.skip_trigram_bugs import BigramCounts, find_skip_trigram_bugs, phrase_counts
from circuits.analysis.skip_trigram_effect import skip_trigram_effect, text_contexts
from circuits.analysis.skip_trigrams import skip_trigram_support, split_words

N_CONTEXTS, PREFIX, GAP = 64, 16, 4  # real-text contexts per model test: 16 tokens, the source, 4 tokens, dest
MIN_EFFECT, MIN_Z = 0.1, 2.0  # the model raises a continuation: >= 0.1 nats on average and > 2 standard errors
CARRY_SHARE = 0.5  # a head carries an effect: at least half of the rise of the output's logit
TOP_FRACTION, MIN_TOP = 0.01, 5  # a circuit supports a skip-trigram: both ranks in the top 1 % (at least 5)
COUNT_WINDOW = 32  # corpus counts of s … d → o: s among the 32 tokens before d
N_BUGS, N_SPLIT = 8, 16  # bug candidates and split words tested on real text
N_SOURCES = 20  # strongest sources per head searched for bugs (the table shows the first 5)

# The paper's named skip-trigrams ("Other Interesting Skip-Trigrams" and "Skip-Trigram 'Bugs'"): source,
# destination (alternatives in order: the first that is one token here is used) and outputs, as token texts.
PAPER_EXAMPLES = [
    {"where": "[English] common phrases", "source": " keep", "dest": [" in"], "outs": [" mind"], "gap": GAP},
    {"where": "[English] common phrases", "source": " keep", "dest": [" at"], "outs": [" bay"], "gap": GAP},
    {"where": "[English] common phrases", "source": " keep", "dest": [" under"], "outs": [" wraps"], "gap": GAP},
    {"where": "[English] common phrases", "source": " difficult", "dest": [" not"], "outs": [" impossible"],
     "gap": GAP},
    {"where": "[Python] first argument of a method", "source": " def", "dest": ["("], "outs": ["self"], "gap": GAP},
    {"where": "[Python] file mode of open()", "source": " open", "dest": ['","', ' "'],
     "outs": ["rb", "wb", "r", "w"], "gap": GAP},
    {"where": "[Python] common patterns", "source": " for", "dest": [" in"],
     "outs": [" range", " enumerate", " sorted", " zip", " tqdm"], "gap": GAP},
    {"where": "one head, query ·and", "source": " back", "dest": [" and"], "outs": [" forth"], "gap": 0},
    {"where": "copying across tokenisations", "source": " Ralph", "dest": ["R"], "outs": ["alph"], "gap": GAP},
]

KEEP_BUG = [(" in", " mind", "intended"), (" in", " bay", "crossed"), (" at", " bay", "intended"),
            (" at", " mind", "crossed")]  # the paper's bug: keep … in → bay and keep … at → mind


# ---- rules and shared measurements -------------------------------------------------------------------

def top_rank(n_allowed: int) -> int:
    """The rank a circuit entry must reach to count as supporting a skip-trigram."""
    return max(MIN_TOP, math.ceil(TOP_FRACTION * n_allowed))


def raised(change: float, se: float) -> bool:
    """The model raises a continuation: by at least ``MIN_EFFECT`` nats on average over the contexts, and by
    more than ``MIN_Z`` standard errors of the paired difference (a NaN error never passes)."""
    return bool(change >= MIN_EFFECT and change > MIN_Z * se)


def bug_kind(decode, o1: int, o2: int) -> str:
    """What a bug candidate is made of, read from its two intended outputs: "inside a word" when both begin
    with a letter, so that each continues the word its destination began (``·tw … el → ve`` spells ·twelve);
    "whole words" when both are a space and letters, a phrase like the paper's ``keep … in → mind``;
    "symbols" when neither holds a letter; "mixed" otherwise."""
    a, b = decode(o1), decode(o2)
    if a[:1].isalpha() and b[:1].isalpha():
        return "inside a word"
    if all(t[:1] == " " and t[1:].isalpha() for t in (a, b)):
        return "whole words"
    return "symbols" if not any(c.isalpha() for c in a + b) else "mixed"


def verdict(supported: bool, model_raises: bool) -> str:
    return {(True, True): "reproduced", (False, False): "not reproduced"}.get((supported, model_raises), "partly")


def _effect(book, model, controls, source: int, dest: int, targets: list[int], gap: int, seed: int) -> list[dict]:
    """``skip_trigram_effect`` of ``source`` on ``targets`` after ``dest``, on ``N_CONTEXTS`` real contexts:
    the mean change (nats), its standard error, the share of contexts raised, whether the model raises it
    (``raised``), and each head's part of the rise of the target's logit."""
    prefix = min(PREFIX, model.cfg.n_ctx - gap - 2)  # the whole sequence fits the context
    prefixes, gaps = text_contexts(book.tokens["validation"], N_CONTEXTS, prefix, gap, seed=seed, avoid=[source])
    frame = skip_trigram_effect(model, prefixes, gaps, source, [c for c in controls if c != source], targets,
                                dest=dest)
    out = []
    for r in frame.to_dict("records"):
        row = {"change": float(r["log-prob change (nats)"]), "se": float(r["standard error"]),
               "share": float(r["contexts raised"]), "p source": float(r["P with source"]),
               "p control": float(r["P with control"])}
        row["raised"] = raised(row["change"], row["se"])
        if "head logit change" in r:
            by_head = np.asarray(r["head logit change"], dtype=float)
            total = float(r["logit change"])
            top = int(np.argmax(by_head))
            row.update({"logit change": total, "head logit change": by_head.tolist(), "carrier": top,
                        "carrier share": float(by_head[top] / total) if total > 0 else 0.0})
        out.append(row)
    return out


def _supports(ov, pref, allowed, sources: torch.Tensor, dests: torch.Tensor, outs: torch.Tensor) -> dict:
    """``skip_trigram_support`` of each skip-trigram ``sources[i] … dests[i] → outs[i]`` by every head, [H, n],
    and the best head of each (module docstring)."""
    s = skip_trigram_support(ov, pref, sources, dests, outs, allowed)  # each [H, n]
    worse = torch.maximum(s["ov rank"], s["qk rank"])
    s["best"] = [int(min(range(worse.shape[0]), key=lambda j: (int(worse[j, i]), int(s["ov rank"][j, i]))))
                 for i in range(len(sources))]
    return s


def _ranks(s: dict, head: int, i: int) -> dict:
    return {"head": head, "ov rank": int(s["ov rank"][head, i]), "ov logit": float(s["ov logit"][head, i]),
            "qk rank": int(s["qk rank"][head, i]), "preference": float(s["qk value"][head, i])}


def _support(ov, pref, allowed, source: int, dest: int, out: int) -> dict:
    """The best head for one skip-trigram ``source … dest → out`` and its ranks."""
    s = _supports(ov, pref, allowed, *(torch.tensor([x]) for x in (source, dest, out)))
    return _ranks(s, s["best"][0], 0)


def _encode(book, text: str) -> list[int]:
    return list(book.tokenizer.encode(text, add_special_tokens=False))


# ---- the named examples, the bugs and the split words ------------------------------------------------

def paper_examples(book, model, ov_c, pref, allowed, allowed_set, top, controls, train) -> list[dict]:
    """One row per (named example, output): tokens, corpus counts, the best head's ranks, the model's effect."""
    rows = []
    for i, ex in enumerate(PAPER_EXAMPLES):
        source = book.token_id(ex["source"])
        dests = [(d, book.token_id(d)) for d in ex["dest"]]
        dest_text, dest = next(((d, t) for d, t in dests if t is not None and t in allowed_set), (ex["dest"][0], None))
        outs = [(o, book.token_id(o)) for o in ex["outs"]]
        testable = [(o, t) for o, t in outs if t is not None and t in allowed_set]
        effects = {}
        if source is not None and source in allowed_set and dest is not None and testable:
            eff = _effect(book, model, controls, source, dest, [t for _, t in testable], ex["gap"], seed=10 + i)
            effects = dict(zip([o for o, _ in testable], eff))
        for o, t in outs:
            parts = [(ex["source"], source), (dest_text, dest), (o, t)]
            row = {"where": ex["where"], "source": ex["source"], "paper dest": ex["dest"][0], "dest": dest_text,
                   "out": o, "ids": [source, dest, t], "gap": ex["gap"],
                   "not tokens": [text for text, tok in parts if tok is None],  # not one token of this tokenizer
                   "rare": [text for text, tok in parts if tok is not None and tok not in allowed_set],
                   "rare counts": [int(book.counts[tok]) for _, tok in parts if tok is not None
                                   and tok not in allowed_set],
                   "corpus": phrase_counts(train, *(_encode(book, x) for x in (ex["source"], dest_text, o)),
                                           window=COUNT_WINDOW, adjacent=ex["gap"] == 0)}
            missing = row["not tokens"] + row["rare"]
            if not missing:
                row.update(_support(ov_c, pref, allowed, source, dest, t))
                row.update(effects[o])
                row["supported"] = max(row["ov rank"], row["qk rank"]) <= top
                row["verdict"] = verdict(row["supported"], row["raised"])
            else:
                row["verdict"] = "not testable"
            rows.append(row)
    return rows


def keep_bug(book, model, ov_c, pref, allowed, allowed_set, controls, train) -> dict:
    """The paper's own bug, tried directly: after ``keep … in`` and ``keep … at``, does the model raise
    `` mind`` and `` bay`` alike? One row per (destination, output) of ``KEEP_BUG``, run where its tokens exist,
    each with its corpus counts."""
    ok = lambda text: book.token_id(text) is not None and book.token_id(text) in allowed_set
    keep = book.token_id(" keep")
    rows = [{"dest": d, "out": o, "kind": kind, "missing": [t for t in (" keep", d, o) if not ok(t)],
             "corpus": phrase_counts(train, *(_encode(book, x) for x in (" keep", d, o)), window=COUNT_WINDOW)}
            for d, o, kind in KEEP_BUG]
    for dest in dict.fromkeys(d for d, _, _ in KEEP_BUG):
        todo = [r for r in rows if r["dest"] == dest and not r["missing"]]
        if todo:  # the contexts of the named example keep … dest (same seed), so the intended rows agree
            i = next(i for i, ex in enumerate(PAPER_EXAMPLES) if ex["source"] == " keep" and ex["dest"] == [dest])
            effects = _effect(book, model, controls, keep, book.token_id(dest),
                              [book.token_id(r["out"]) for r in todo], GAP, seed=10 + i)
            for r, e in zip(todo, effects):
                r.update(e)
    out = {"rows": rows, "missing": list(dict.fromkeys(t for r in rows for t in r["missing"]))}
    if all(ok(t) for t in (" keep", " in", " mind", " bay")):  # the head of keep … in → mind, and its · bay
        head = _support(ov_c, pref, allowed, keep, book.token_id(" in"), book.token_id(" mind"))["head"]
        out["head"] = head
        out["bay ov rank"] = int(skip_trigram_support(ov_c, pref, keep, book.token_id(" in"), book.token_id(" bay"),
                                                      allowed)["ov rank"][head])
    return out


def bug_search(book, model, ov_c, pref, allowed, controls, sources, train: np.ndarray) -> list[dict]:
    """``find_skip_trigram_bugs`` on the train tokens ``train`` (``findings.one_layer`` passes its first
    ``BUG_STREAM``); each candidate run on real text."""
    found = find_skip_trigram_bugs(ov_c, pref, allowed, train, BigramCounts(train, book.preset.d_vocab), window=32,
                                   n_sources=N_SOURCES, n_dest=40, n_out=10, sources=sources, min_p=0.02,
                                   min_count=10, min_lift=2.0, max_ratio=0.1)
    if not len(found):
        return []
    rows = []
    for i, c in enumerate(found.drop_duplicates(["d1", "o1", "d2", "o2"]).head(N_BUGS).to_dict("records")):
        intended, bug = _effect(book, model, controls, int(c["source"]), int(c["d1"]), [int(c["o1"]), int(c["o2"])],
                                GAP, seed=100 + i)
        rows.append({**{k: int(c[k]) for k in ("head", "source", "d1", "o1", "d2", "o2")},
                     "corpus crossed": float(c["P(o2|s…d1)"]), "corpus intended": float(c["P(o2|s…d2)"]),
                     "n s…d1": int(c["n s…d1"]), "n crossed": int(c["n s…d1→o2"]),
                     "intended": intended, "bug": bug, "raised": bug["raised"],
                     "kind": bug_kind(book.decode, int(c["o1"]), int(c["o2"]))})
    return rows


def split_word_search(book, model, ov_c, pref, allowed, top, controls) -> dict:
    """The paper's `` Ralph`` … ``R`` → ``alph`` for every frequent word that splits without its space; the
    ``N_SPLIT`` most frequent run on real text, with the head that carries the effect and its ranks."""
    by_freq = allowed[np.argsort(-book.counts[allowed.numpy()], kind="stable")].tolist()
    encode = lambda text: book.tokenizer.encode(text, add_special_tokens=False)
    allowed_set = set(by_freq)
    words = [w for w in split_words(by_freq, book.decode, encode) if w[1] in allowed_set and w[2] in allowed_set]
    support = _supports(ov_c, pref, allowed, *(torch.tensor([w[i] for w in words], dtype=torch.long)
                                               for i in range(3))) if words else {}
    rows = []
    for i, (word, first, second) in enumerate(words):
        row = {"word": word, "first": first, "second": second, **_ranks(support, support["best"][i], i)}
        row["supported"] = max(row["ov rank"], row["qk rank"]) <= top
        if i < N_SPLIT:
            row.update(_effect(book, model, controls, word, first, [second], GAP, seed=200 + i)[0])
            carrier = row.get("carrier")
            if carrier is not None:
                ranks = _ranks(support, carrier, i)
                row.update({"carrier ov rank": ranks["ov rank"], "carrier qk rank": ranks["qk rank"],
                            "carried": row["raised"] and row["carrier share"] >= CARRY_SHARE})
        rows.append(row)
    tested = [r for r in rows if "raised" in r]
    return {"rows": rows, "n": len(rows), "supported": sum(r["supported"] for r in rows), "tested": len(tested),
            "raised": sum(r["raised"] for r in tested), "carried": sum(r.get("carried", False) for r in tested),
            "carrier supported": sum(r.get("carried", False) and max(r["carrier ov rank"], r["carrier qk rank"])
                                     <= top for r in tested)}
