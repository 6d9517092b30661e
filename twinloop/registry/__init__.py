"""Adapter registry: content-addressed LoRA adapter folders and their records."""

from twinloop.registry.schemas import AdapterView, RegisterAdapterRequest
from twinloop.registry.service import (
    ADAPTERS_DIRNAME,
    AdapterConflictError,
    AdapterRegistry,
    base_model_aliases,
)

__all__ = [
    "ADAPTERS_DIRNAME",
    "AdapterConflictError",
    "AdapterRegistry",
    "AdapterView",
    "RegisterAdapterRequest",
    "base_model_aliases",
]
