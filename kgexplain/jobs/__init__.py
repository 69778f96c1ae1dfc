"""The jobs: every method of kgexplain as one frozen config dataclass and one call,
``run_<job>(config, store, progress) -> result``, the same from Python and from the CLI.

``store`` is an open :class:`~kgexplain.store.GraphStore` or a :class:`~kgexplain.store.StoreSpec` (opened after the
job's cheap checks); ``progress`` is a :data:`~kgexplain.progress.Progress` callback or None. Each result is a typed
object with ``to_json()``, ``rows()`` and ``text()``, which is what the CLI prints for ``--json``, ``--csv`` and the
table.
"""

from kgexplain.jobs.aog import LearnConfig, LearnResult, LocalizeConfig, LocalizeResult, run_learn, run_localize
from kgexplain.jobs.build import BuildConfig, BuildResult, run_build
from kgexplain.jobs.common import JobResult
from kgexplain.jobs.info import DecodersConfig, DecodersResult, InfoConfig, InfoResult, run_decoders, run_info
from kgexplain.jobs.kp import KnowledgePointsConfig, KnowledgePointsResult, checkpoint_series, run_kp

__all__ = [
    "BuildConfig",
    "BuildResult",
    "DecodersConfig",
    "DecodersResult",
    "InfoConfig",
    "InfoResult",
    "JobResult",
    "KnowledgePointsConfig",
    "KnowledgePointsResult",
    "LearnConfig",
    "LearnResult",
    "LocalizeConfig",
    "LocalizeResult",
    "checkpoint_series",
    "run_build",
    "run_decoders",
    "run_info",
    "run_kp",
    "run_learn",
    "run_localize",
]
