"""Where the project's files live: one root for ``data/`` (corpus, tokenizers, token files, published
checkpoints), ``runs/`` and the book, found once here and used by every module that reads or writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CIRCUITS_HOME"


def project_root() -> Path:
    """The repository root: ``$CIRCUITS_HOME``, else the folder above this file holding ``data/`` and
    ``pyproject.toml`` (an editable install or a checkout on ``sys.path``)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "data").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    raise FileNotFoundError(f"cannot find the project root (a folder with data/ and pyproject.toml) above {here}; "
                            f"set {HOME_ENV}")


def data_dir() -> Path:
    """``data/`` under the project root: the corpus, tokenizers, token files and published checkpoints.

    Read at call time, so ``$CIRCUITS_HOME`` set after import (as the tests do) is honoured; the module
    constants built from it (``TOKENIZER_DIR``, ``TOKENS_DIR``, ``EMBEDDED_PATH``) are fixed at import.
    """
    return project_root() / "data"
