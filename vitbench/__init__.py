"""vitbench: which way of writing a Vision Transformer is faster, lighter and as accurate."""

__version__ = "0.1.0"

from vitbench import wall  # noqa: E402, F401  (first: its clock starts with the package)
from vitbench.errors import VitbenchError  # noqa: E402

__all__ = ["VitbenchError", "__version__", "create_model", "list_variants"]


def __getattr__(name: str):
    """``create_model`` and ``list_variants`` import torch when first asked for, not with the package: a
    command starts its worker processes (``suite --gpus N``) or says what was wrong with its input first."""
    if name in ("create_model", "list_variants"):
        from vitbench import models

        return getattr(models, name)
    raise AttributeError(f"module 'vitbench' has no attribute {name!r}")
