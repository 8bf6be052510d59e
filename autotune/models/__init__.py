"""Model catalog: what a model looks like to SGLang's KV pools."""

from autotune.models.catalog import CatalogEntry, catalog_entries, catalog_specs, load_model
from autotune.models.errors import ModelConfigError, ModelError, ModelNotFound
from autotune.models.params import ParamBreakdown
from autotune.models.spec import AttentionShape, ModelSpec, MoEInfo, kv_dtype_bytes

__all__ = [
    "AttentionShape",
    "CatalogEntry",
    "ModelConfigError",
    "ModelError",
    "ModelNotFound",
    "ModelSpec",
    "MoEInfo",
    "ParamBreakdown",
    "catalog_entries",
    "catalog_specs",
    "kv_dtype_bytes",
    "load_model",
]
