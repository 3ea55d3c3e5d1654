"""Hook points: one way to read or change any activation of the model (TransformerLens's idea).

A ``HookPoint`` is an identity module placed where an activation is made; the model names each one by its
place (``blocks.0.attn.hook_pattern``). Functions attached to a point, ``fn(value, name) -> value or None``,
see the value as it passes and may return a replacement: caching, ablation, frozen patterns and edits of a
head's output are all such functions (``AttnOnlyTransformer.hooks``, ``run_with_hooks``, ``run_with_cache``).
While any function is attached, the attention layers take their explicit path, in which the pattern and
every head's output exist as tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


class HookPoint(nn.Module):
    """An identity on the forward pass, unless functions are attached (``fns``); ``name`` is set by the model."""

    def __init__(self):
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self.fns:
            out = fn(x, self.name)
            if out is not None:
                if out.shape != x.shape:
                    raise ValueError(f"hook on {self.name} returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
                x = out
        return x


def name_hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Give every ``HookPoint`` of ``model`` its module name; returns them by name."""
    points = {name: m for name, m in model.named_modules() if isinstance(m, HookPoint)}
    for name, point in points.items():
        point.name = name
    return points
