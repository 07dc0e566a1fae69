"""vitbench: which way of writing a Vision Transformer is faster, lighter and as accurate."""

__version__ = "0.1.0"

from vitbench import wall  # noqa: E402, F401  (first: its clock starts with the package)
from vitbench.errors import VitbenchError  # noqa: E402
from vitbench.models import create_model, list_variants  # noqa: E402

__all__ = ["VitbenchError", "__version__", "create_model", "list_variants"]
