"""Digests of what a run writes: per node label the count and a digest of the sorted ids, per relationship type the
count, and a digest of the exact rows (see ``kgexplain.store.integrity``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

WRITTEN = "written"  # the key of the record in a Run's stats


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def _content_digest(tables: Mapping[str, pa.Table]) -> str:
    """The exact rows, in the order written (the writer is deterministic, so equal inputs give equal digests)."""
    h = hashlib.sha256()
    for name in sorted(tables):
        sink = pa.BufferOutputStream()
        table = tables[name].combine_chunks()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(name.encode())
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()[:16]


def written_record(nodes: Mapping[str, pa.Table], rels: Mapping[str, pa.Table]) -> dict[str, Any]:
    """What a run is about to write, as recorded on its Run."""
    return {
        "nodes": {
            label: {"count": len(t), "ids": ids_digest(t.column("id").to_pylist())} for label, t in nodes.items()
        },
        "rels": {name: len(t) for name, t in rels.items()},
        "content": _content_digest({**nodes, **{f"rel:{k}": v for k, v in rels.items()}}),
    }
