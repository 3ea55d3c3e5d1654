"""Measurements of a model: next-token losses (``losses``), Olsson et al.'s per-head scores and in-context
learning score (``olsson``), and the one rule per kind of head that every chapter uses (``heads``)."""
