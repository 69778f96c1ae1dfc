"""kgexplain: turn what a trained CNN has learned into a queryable knowledge graph.

Every method is one call on a store::

    from kgexplain import BuildConfig, LearnConfig, StoreSpec, run_build, run_learn

    store = StoreSpec("my-store")
    build = run_build(BuildConfig(n=40), store)
    head = run_learn(LearnConfig(part="head"), store)

The names below load on first use, so ``import kgexplain`` stays cheap (no torch) for the store's query process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kgexplain.version import __version__

if TYPE_CHECKING:
    from kgexplain.data.spec import DataSpec
    from kgexplain.errors import KgExplainError
    from kgexplain.jobs import (
        BuildConfig,
        DecodersConfig,
        InfoConfig,
        KnowledgePointsConfig,
        LearnConfig,
        LocalizeConfig,
        run_build,
        run_decoders,
        run_info,
        run_kp,
        run_learn,
        run_localize,
    )
    from kgexplain.models.registry import ModelHandle, load_model
    from kgexplain.progress import Progress, ProgressEvent
    from kgexplain.store import GraphStore, StoreSpec, open_store

_EXPORTS = {
    "BuildConfig": "kgexplain.jobs",
    "DecodersConfig": "kgexplain.jobs",
    "InfoConfig": "kgexplain.jobs",
    "KnowledgePointsConfig": "kgexplain.jobs",
    "LearnConfig": "kgexplain.jobs",
    "LocalizeConfig": "kgexplain.jobs",
    "run_build": "kgexplain.jobs",
    "run_decoders": "kgexplain.jobs",
    "run_info": "kgexplain.jobs",
    "run_kp": "kgexplain.jobs",
    "run_learn": "kgexplain.jobs",
    "run_localize": "kgexplain.jobs",
    "DataSpec": "kgexplain.data.spec",
    "StoreSpec": "kgexplain.store",
    "GraphStore": "kgexplain.store",
    "open_store": "kgexplain.store",
    "ModelHandle": "kgexplain.models.registry",
    "load_model": "kgexplain.models.registry",
    "Progress": "kgexplain.progress",
    "ProgressEvent": "kgexplain.progress",
    "KgExplainError": "kgexplain.errors",
}

__all__ = [
    "BuildConfig",
    "DataSpec",
    "DecodersConfig",
    "GraphStore",
    "InfoConfig",
    "KgExplainError",
    "KnowledgePointsConfig",
    "LearnConfig",
    "LocalizeConfig",
    "ModelHandle",
    "Progress",
    "ProgressEvent",
    "StoreSpec",
    "__version__",
    "load_model",
    "open_store",
    "run_build",
    "run_decoders",
    "run_info",
    "run_kp",
    "run_learn",
    "run_localize",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kgexplain' has no attribute {name!r}")
