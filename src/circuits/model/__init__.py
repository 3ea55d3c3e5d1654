"""The model: the attention-only transformer (``transformer``), its hook points (``hooks``), checkpoints
(``checkpoint``), the published models of each preset (``published``) and TransformerLens interop (``interop``)."""

from .checkpoint import load_model, save_model
from .transformer import AttnOnlyTransformer

__all__ = ["AttnOnlyTransformer", "load_model", "save_model"]
