from vitbench.config import ViTConfig
from vitbench.models.registry import (
    PRESETS,
    VARIANTS,
    count_params,
    create_model,
    get_variant,
    list_variants,
    resolve_config,
)
from vitbench.models.vit import ViT

__all__ = ["PRESETS", "VARIANTS", "ViT", "ViTConfig", "count_params", "create_model", "get_variant",
           "list_variants", "resolve_config"]
