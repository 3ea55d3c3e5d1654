"""Configurations and presets.

Three presets, chosen by the environment variable ``CIRCUITS_PRESET`` (read by the
notebooks, the tests and nbmake alike):

- ``smoke``: a tiny model and a few steps, so CI executes every notebook in seconds.
- ``smoke-gpt2``: the same at GPT-2's 50,257-token vocabulary (CI runs every chapter with it too).
- ``cpu``: the default without a GPU; small enough to grow induction heads on 2 cores.
- ``paper``: the paper's sizes (12 heads x 64, d_model 768, GPT-2 BPE, OpenWebText).

Every config is a frozen dataclass, so a checkpoint can store it as JSON and a loaded
model explains itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

PRESET_ENV = "CIRCUITS_PRESET"
DATA_ENV = "CIRCUITS_DATA"  # "embedded", "openwebtext" or the path of a local copy of OpenWebText


POS_INITS = ("normal", "sinusoidal")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an attention-only transformer (paper section "Model simplifications")."""

    n_layers: int  # 0, 1, 2, ...: attention layers; 0 gives the bigram model W_U W_E
    d_model: int  # width of the residual stream
    n_heads: int  # heads per layer
    d_head: int  # width of each head's query/key/value space
    n_ctx: int  # longest sequence; rows of W_pos
    d_vocab: int  # tokenizer size; rows of W_E, columns of W_U
    init_std: float = 0.02  # std of the normal init of every weight (GPT-2's)
    # std of W_E and W_pos (None: init_std). Larger token/position vectors give attention scores
    # a signal from step 0, so positional (previous-token) heads can start forming at once.
    embed_init_std: float | None = None
    # "normal": W_pos ~ Normal(0, std) as every weight; "sinusoidal": the Transformer's sin/cos table
    # scaled to the same RMS, so neighbouring positions start similar and "attend to the position
    # one back" is a fixed linear map of the query's position (a rotation per frequency)
    pos_init: str = "normal"
    pos_init_std: float | None = None  # std (or RMS) of W_pos alone; None: as W_E

    def __post_init__(self):
        for name in ("d_model", "n_heads", "d_head", "n_ctx", "d_vocab"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.pos_init not in POS_INITS:
            raise ValueError(f"ModelConfig.pos_init must be one of {POS_INITS}, got {self.pos_init!r}")
        for name in ("init_std", "embed_init_std", "pos_init_std"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"ModelConfig.{name} must be > 0, got {value}")
        if self.n_layers < 0:
            raise ValueError(f"ModelConfig.n_layers must be >= 0, got {self.n_layers}")


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from."""

    corpus: str  # "embedded" (data/corpus, committed) or "openwebtext" (a local copy, else the hub)
    tokenizer: str  # "bpe4k" (trained on the embedded corpus, committed; "bpe8k" for older trials) or "gpt2"
    path: str | None = None  # a local copy of the corpus (OpenWebText: parquet, arrow or text files)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (AdamW, linear warmup then cosine decay)."""

    batch_size: int  # sequences per optimiser step, summed over all DDP ranks
    total_tokens: int  # training length; steps = total_tokens // (batch_size * n_ctx)
    lr: float  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only; there are no biases or gains
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm
    eval_every: int = 100  # steps between validation/metric evaluations
    eval_batches: int = 8  # validation batches per evaluation
    checkpoint_every: int = 200  # steps between resumable checkpoints
    n_snapshots: int = 8  # log-spaced weight snapshots for studying the phase change
    seed: int = 0
    precision: str = "bf16"  # "bf16" autocast (CPU and CUDA) or "fp32"
    compile: bool = False  # torch.compile the training forward (CUDA)


@dataclass(frozen=True)
class Preset:
    """Everything one preset fixes: data, the shape of the 0/1/2-layer models, training."""

    name: str
    data: DataConfig
    d_model: int
    n_heads: int
    d_head: int
    n_ctx: int
    d_vocab: int
    train: TrainConfig
    # per-layer-count training length (the 2-layer model needs the most tokens)
    total_tokens: dict = field(default_factory=dict)
    embed_init_std: float | None = None  # see ModelConfig.embed_init_std
    pos_init: str = "normal"  # see ModelConfig.pos_init
    pos_init_std: float | None = None  # see ModelConfig.pos_init_std

    def model_config(self, n_layers: int) -> ModelConfig:
        return ModelConfig(n_layers=n_layers, d_model=self.d_model, n_heads=self.n_heads,
                           d_head=self.d_head, n_ctx=self.n_ctx, d_vocab=self.d_vocab,
                           embed_init_std=self.embed_init_std, pos_init=self.pos_init,
                           pos_init_std=self.pos_init_std)

    def train_config(self, n_layers: int) -> TrainConfig:
        tokens = self.total_tokens.get(n_layers, self.train.total_tokens)
        return dataclasses.replace(self.train, total_tokens=tokens)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        data=DataConfig(corpus="embedded", tokenizer="bpe4k"),
        d_model=32, n_heads=4, d_head=8, n_ctx=64, d_vocab=4096,
        train=TrainConfig(batch_size=8, total_tokens=8 * 64 * 40, lr=3e-3, warmup_steps=5,
                          eval_every=10, eval_batches=2, checkpoint_every=20, n_snapshots=3),
    ),
    # the smoke preset at GPT-2's vocabulary, on the embedded corpus: CI runs every chapter with it, so the
    # 50k-vocabulary code paths (circuit scans, token dumps, browsers) run without a GPU or a download
    "smoke-gpt2": Preset(
        name="smoke-gpt2",
        data=DataConfig(corpus="embedded", tokenizer="gpt2"),
        d_model=32, n_heads=4, d_head=8, n_ctx=64, d_vocab=50257,
        train=TrainConfig(batch_size=8, total_tokens=8 * 64 * 40, lr=3e-3, warmup_steps=5,
                          eval_every=10, eval_batches=2, checkpoint_every=20, n_snapshots=3),
    ),
    "cpu": Preset(
        name="cpu",
        # a 4,096-token BPE: the unembedding was 73 % of the FLOPs at 8,192, and halving it brought an
        # induction head within 30 min on an fp32-only (AVX2) CPU too (benchmarks/HISTORY.md, trials 8 and 12)
        data=DataConfig(corpus="embedded", tokenizer="bpe4k"),
        # 12 heads of 32 (trial 18): with 8 an induction head grew for 12 of 16 seeds, with 12 for 15 of 16
        # (benchmarks/HISTORY.md, trials 14, 17 and 19), at 22 % more FLOPs a token (about 27-29 min instead of 23 on AVX2, estimated)
        d_model=256, n_heads=12, d_head=32, n_ctx=256, d_vocab=4096,
        # weight decay 0.01 and unit-std W_E/W_pos: with GPT-2's 0.02 init and decay 0.1 no
        # previous-token head formed in 24 M tokens; with both it forms by ~6 M (benchmarks/HISTORY.md, trials)
        # eval_batches 8: 256 validation windows an evaluation, for the loss-by-position and ICL curves of the
        # phase change (an fp32 evaluation batch takes 0.38 s here: 3 s an evaluation, 49 in a 2L run)
        train=TrainConfig(batch_size=32, total_tokens=24_000_000, lr=5e-3, warmup_steps=100,
                          weight_decay=0.01, eval_every=100, eval_batches=8, checkpoint_every=200,
                          n_snapshots=10),
        total_tokens={0: 4_000_000, 1: 16_000_000, 2: 40_000_000},
        embed_init_std=1.0,
    ),
    "paper": Preset(
        name="paper",
        data=DataConfig(corpus="openwebtext", tokenizer="gpt2"),
        d_model=768, n_heads=12, d_head=64, n_ctx=1024, d_vocab=50257,
        train=TrainConfig(batch_size=64, total_tokens=5_000_000_000, lr=1e-3, warmup_steps=1000,
                          eval_every=500, eval_batches=20, checkpoint_every=1000, n_snapshots=16,
                          compile=True),
    ),
}


def default_preset_name() -> str:
    """``cpu`` unless a CUDA device is present, in which case ``paper``."""
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def get_preset(name: str | None = None, data: str | None = None) -> Preset:
    """The preset called ``name``, else the one in ``$CIRCUITS_PRESET``, else the default; its data from
    ``data``, else ``$CIRCUITS_DATA``, else its own (``with_data``)."""
    name = name or os.environ.get(PRESET_ENV) or default_preset_name()
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (from {PRESET_ENV} or argument); "
                         f"choose one of {sorted(PRESETS)}")
    return with_data(PRESETS[name], data or os.environ.get(DATA_ENV))


def with_data(preset: Preset, data: str | None) -> Preset:
    """``preset`` trained on other data: ``"embedded"`` (the committed corpus, with the preset's tokenizer: the
    stand-in for OpenWebText on a box without a network), ``"openwebtext"`` (the hub), or the path of a local copy
    of OpenWebText. A preset on other data than its own gets its own name (``paper-embedded``), so its runs never
    mix with the preset's own."""
    if not data:
        return preset
    if data in ("embedded", "openwebtext"):
        corpus, path = data, None
    else:
        corpus, path = "openwebtext", data
    if (corpus, path) == (preset.data.corpus, preset.data.path):
        return preset
    name = preset.name if corpus == preset.data.corpus else f"{preset.name}-{corpus}"
    return dataclasses.replace(preset, name=name, data=DataConfig(corpus, preset.data.tokenizer, path))


def _parse_like(current, text: str, key: str, nullable: bool = False):
    """``text`` as a value of ``current``'s type; ``none`` only where the field may be None
    (``nullable``; a None field takes a float)."""
    try:
        if text.lower() == "none":
            if not nullable:
                raise ValueError(text)
            return None
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, tuple):
            return tuple(float(x) for x in text.split(","))
        if isinstance(current, int):
            number = float(text)  # "20e6" is an int too
            if not number.is_integer():
                raise ValueError(text)
            return int(number)
        if isinstance(current, (float, type(None))):
            return float(text)
        return type(current)(text)
    except ValueError:
        raise ValueError(f"{key}={text!r}: expected a value like {current!r}") from None


def override(preset: Preset, assignments: list[str]) -> Preset:
    """A copy of ``preset`` with ``key=value`` assignments, for training trials (``scripts/induction_run.py``).

    Keys: a preset field (``d_model``, ``n_heads``, ``d_head``, ``n_ctx``, ``embed_init_std``, ...),
    ``train.<field>`` (``train.lr``, ``train.batch_size``, ...), ``data.<field>`` (``data.tokenizer=bpe4k``,
    with ``d_vocab=4096`` to match) or ``total_tokens.<n_layers>``. Values
    are parsed as the field's current type; tuples as comma lists (``train.betas=0.9,0.99``); ``none``
    where the field's type allows None.
    """
    nested = ("name", "data", "train", "total_tokens")  # not assignable as top-level keys
    top_fields = {f.name for f in dataclasses.fields(Preset)} - set(nested)
    parts = {"train": preset.train, "data": preset.data}
    totals, top = dict(preset.total_tokens), preset
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        group, _, name = key.partition(".")
        if group in parts and name in _field_types(parts[group]):
            parts[group] = _assign(parts[group], name, text, key)
        elif group == "total_tokens" and name.isdigit():
            totals[int(name)] = _parse_like(0, text, key)
        elif not name and key in top_fields:
            top = _assign(top, key, text, key)
        else:
            raise ValueError(f"unknown override key {key!r}: use a preset field, train.<field>, "
                             f"data.<field> or total_tokens.<n_layers>")
    return dataclasses.replace(top, total_tokens=totals, **parts)


def add_overrides_argument(parser) -> None:
    """The ``--set KEY=VALUE ...`` option of the trial and benchmark scripts (keys as in ``override``)."""
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides of the preset: d_model=128, n_heads=16, train.lr=1e-2, total_tokens.2=20e6, ...")


def preset_from_args(parser, args) -> Preset:
    """``args.preset`` with the ``--set`` overrides; a bad assignment is a usage error that names it."""
    try:
        return override(get_preset(args.preset), args.set)
    except ValueError as err:
        parser.error(str(err))


def _field_types(obj) -> dict[str, str]:
    """A config dataclass's field names and their declared types, as text."""
    return {f.name: str(f.type) for f in dataclasses.fields(obj)}


def _assign(obj, name: str, text: str, key: str):
    """A copy of the config ``obj`` with field ``name`` parsed from ``text``; ``none`` only where the field's
    declared type allows None."""
    value = _parse_like(getattr(obj, name), text, key, "None" in _field_types(obj)[name])
    return dataclasses.replace(obj, **{name: value})


def to_json(cfg) -> str:
    """A config as JSON (tuples become lists; ``from_json`` turns them back)."""
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def from_json(cls, text: str):
    """Rebuild a config dataclass from ``to_json`` output, rejecting unknown fields."""
    raw = json.loads(text)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{cls.__name__} JSON has unknown fields {sorted(unknown)}")
    if "betas" in raw:
        raw["betas"] = tuple(raw["betas"])
    return cls(**raw)
