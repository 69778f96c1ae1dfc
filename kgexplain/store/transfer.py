"""Moving a store: export to GraphML / JSON lines / CSV, and push an (embedded) store into Neo4j.

Push is idempotent: shared nodes and relationships are merged by id, and every run is written with
``write_run``, which replaces the run's rows in the target; pushing twice gives the same target.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import escape, quoteattr

import pyarrow as pa

from kgexplain.errors import StoreError, UsageError
from kgexplain.progress import Progress, say
from kgexplain.store.base import RUN_SCOPED, GraphStore, RunRecord
from kgexplain.workspace import temporary_beside

FORMATS = ("graphml", "jsonl", "csv")


def _node_table(store: GraphStore, label: str, run: str | None) -> pa.Table:
    props = list(store.schema.node(label).properties)
    where, params = "", {}
    if run is not None and label in RUN_SCOPED:
        where, params = " WHERE n.run = $run", {"run": run}
    elif run is not None and label == "Run":
        where, params = " WHERE n.id = $run", {"run": run}
    cols = ", ".join(f"n.{p} AS {p}" for p in props)
    return store.fetch_table(f"MATCH (n:{label}){where} RETURN {cols}", params, props)


def _rel_table(store: GraphStore, rel: str, run: str | None) -> pa.Table:
    spec = store.schema.rel(rel)
    props = list(spec.properties)
    where, params = "", {}
    if run is not None:
        if spec.source in RUN_SCOPED:
            where, params = " WHERE a.run = $run", {"run": run}
        elif spec.source == "Run":
            where, params = " WHERE a.id = $run", {"run": run}
    cols = "".join(f", e.{p} AS {p}" for p in props)
    return store.fetch_table(
        f"MATCH (a:{spec.source})-[e:{rel}]->(b:{spec.target}){where} RETURN a.id AS from, b.id AS to{cols}",
        params,
        ["from", "to", *props],
    )


def iter_graph(store: GraphStore, run: str | None = None) -> Iterator[tuple[str, str, pa.Table]]:
    """("node", label, table) and ("rel", type, table) for everything in the store (or one run)."""
    for label in store.schema.nodes:
        if label != "Meta" and store.has_label(label):
            yield "node", label, _node_table(store, label, run)
    for rel in store.schema.rels:
        if store.has_label(rel):
            yield "rel", rel, _rel_table(store, rel, run)


def _require_run(store: GraphStore, run: str | None) -> None:
    """A run asked for by name must be there (else an export held only the shared nodes, without a word)."""
    if run is not None and store.run_status(run) is None:
        raise StoreError(f"no run {run!r} in {store.url}", hint="`kgexplain runs` lists them")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _rows(table: pa.Table, chunk: int = 50_000) -> Iterator[dict[str, Any]]:
    """A table's rows as dicts, a chunk at a time (a run's 600,000 FIRES_ON rows as one list of dicts is a GB)."""
    for batch in table.to_batches(max_chunksize=chunk):
        yield from batch.to_pylist()


GRAPHML_TYPES = {"STRING": "string", "DOUBLE": "double", "INT64": "long", "BOOL": "boolean"}
GRAPHML_HEAD = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
    'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
)


def _graphml_keys(store: GraphStore) -> dict[tuple[str, str], tuple[str, str]]:
    """(``node`` or ``edge``, property) -> (key id, GraphML type), from the schema: every key is declared before
    the graph, as GraphML wants, without reading the data first. A name typed differently on two labels becomes
    ``double`` when both are numbers, else ``string``."""
    types: dict[tuple[str, str], set[str]] = {("node", "_label"): {"string"}, ("edge", "_type"): {"string"}}
    for label, node in store.schema.nodes.items():
        for name, kind in node.properties.items():
            if label != "Meta" and name != "id":
                types.setdefault(("node", name), set()).add(GRAPHML_TYPES.get(kind, "string"))
    for rel in store.schema.rels.values():
        for name, kind in rel.properties.items():
            types.setdefault(("edge", name), set()).add(GRAPHML_TYPES.get(kind, "string"))
    keys = {}
    for i, (key, found) in enumerate(types.items()):
        kind = found.pop() if len(found) == 1 else "double" if found <= {"long", "double"} else "string"
        keys[key] = (f"d{i}", kind)
    return keys


def _graphml_value(v: Any, kind: str) -> str:
    if kind == "boolean":
        return "true" if v else "false"
    if kind == "double":
        return repr(float(v))
    return escape(str(v))


def _write_graphml(f: TextIO, store: GraphStore, run: str | None, counts: dict[str, int]) -> None:
    """Stream the store (or one run) as GraphML, table by table: nodes carry ``_label``, edges ``_type`` (as
    ``nx.write_graphml`` of the same graph did, without building it in memory: 7.6 GB for a ResNet-50 run of
    61,440 patterns and 1.2 M relationships)."""
    keys = _graphml_keys(store)
    f.write(GRAPHML_HEAD)
    for (domain, name), (key, kind) in keys.items():
        f.write(f'  <key id="{key}" for="{domain}" attr.name={quoteattr(name)} attr.type="{kind}" />\n')
    f.write('  <graph edgedefault="directed">\n')
    for what, name, table in iter_graph(store, run):
        domain, tag = ("node", "_label") if what == "node" else ("edge", "_type")
        label_key = keys[(domain, tag)][0]
        for row in _rows(table):
            if what == "node":
                f.write(f"    <node id={quoteattr(str(row.pop('id')))}>")
            else:
                f.write(f"    <edge source={quoteattr(str(row.pop('from')))} target={quoteattr(str(row.pop('to')))}>")
            f.write(f'<data key="{label_key}">{escape(name)}</data>')
            for prop, v in row.items():
                if v is None:
                    continue
                key, kind = keys[(domain, prop)]
                f.write(f'<data key="{key}">{_graphml_value(v, kind)}</data>')
            f.write("</node>\n" if what == "node" else "</edge>\n")
        counts[name] = len(table)
    f.write("  </graph>\n</graphml>\n")


def export(store: GraphStore, fmt: str, out: str | Path, run: str | None = None) -> dict[str, int]:
    """Write the store (or one run) as ``graphml`` (one file), ``jsonl`` (one file) or ``csv`` (a folder); ``out``
    ``-`` writes graphml or jsonl to standard output."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", hint=f"use {', '.join(FORMATS)}")
    _require_run(store, run)
    if str(out) == "-":  # standard output, for a pipe
        if fmt == "csv":
            raise UsageError("--out - writes one stream: graphml or jsonl", hint="csv writes a folder: pass --out DIR")
        counts: dict[str, int] = {}
        _write_one_file(sys.stdout, store, fmt, run, counts)
        sys.stdout.flush()
        return counts
    out = Path(out).expanduser()
    try:
        return _export(store, fmt, out, run)
    except OSError as e:
        raise StoreError(f"cannot write {out}: {e.strerror or e}", hint="pass --out with a writable place") from e


def _export(store: GraphStore, fmt: str, out: Path, run: str | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    if fmt == "csv":
        out.mkdir(parents=True, exist_ok=True)
        for kind, name, table in iter_graph(store, run):
            path = out / f"{'nodes' if kind == 'node' else 'rels'}_{name}.csv"
            tmp = temporary_beside(path)  # each file whole or not at all
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(table.column_names)
                for row in _rows(table):
                    w.writerow(["" if v is None else v for v in row.values()])
            tmp.replace(path)
            counts[name] = len(table)
        return counts
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(out)
    with open(tmp, "w", encoding="utf-8") as f:
        _write_one_file(f, store, fmt, run, counts)
    tmp.replace(out)
    return counts


def _write_one_file(f: TextIO, store: GraphStore, fmt: str, run: str | None, counts: dict[str, int]) -> None:
    """The graph as JSON lines or GraphML into ``f``, counting what it wrote per label and type into ``counts``."""
    if fmt == "graphml":
        _write_graphml(f, store, run, counts)
        return
    for kind, name, table in iter_graph(store, run):
        for row in _rows(table):
            if kind == "node":
                obj = {
                    "kind": "node",
                    "label": name,
                    "id": row.pop("id"),
                    "props": {k: _clean(v) for k, v in row.items() if v is not None},
                }
            else:
                obj = {
                    "kind": "rel",
                    "type": name,
                    "from": row.pop("from"),
                    "to": row.pop("to"),
                    "props": {k: _clean(v) for k, v in row.items() if v is not None},
                }
            f.write(json.dumps(obj) + "\n")
        counts[name] = len(table)


def push(
    source: GraphStore, target: GraphStore, run: str | None = None, progress: Progress | None = None
) -> dict[str, int]:
    """Copy ``source`` (or one run) into ``target``, idempotently."""
    if source.url == target.url:
        raise UsageError("source and target are the same store")
    _require_run(source, run)  # before anything is written to the target
    target.ensure_writable()
    counts: dict[str, int] = {}
    shared = [label for label in source.schema.nodes if label not in (*RUN_SCOPED, "Meta", "Run")]
    for label in shared:
        if source.has_label(label):
            t = _node_table(source, label, None)
            counts[label] = target.ensure_nodes(label, t)
            say(progress, f"{label}: {len(t)} rows, {counts[label]} new")
    for rel in ("OF_MODEL", "IN_LAYER"):
        if source.has_label(rel):
            counts[rel] = target.ensure_rels(rel, _rel_table(source, rel, None))
    run_rows = _node_table(source, "Run", run).to_pylist() if source.has_label("Run") else []
    run_rows.sort(key=lambda r: r.get("started") or "")  # a run may use patterns of an earlier one
    for r in run_rows:
        if r.get("status") != "complete":
            say(progress, f"run {r['id']}: skipped (status {r.get('status')})")
            continue
        nodes = {label: _node_table(source, label, r["id"]) for label in RUN_SCOPED if source.has_label(label)}
        rels = {
            rel: _rel_table(source, rel, r["id"])
            for rel, spec in source.schema.rels.items()
            if spec.source in RUN_SCOPED and source.has_label(rel)
        }
        record = RunRecord(
            r["id"],
            r.get("kind") or "",
            r.get("model") or "",
            r.get("data") or "",
            json.loads(r.get("config") or "{}"),
            json.loads(r.get("stats") or "{}"),
            r.get("started"),
        )
        target.write_run(record, {k: v for k, v in nodes.items() if len(v)}, {k: v for k, v in rels.items() if len(v)})
        n = sum(len(v) for v in nodes.values()) + sum(len(v) for v in rels.values())
        counts[f"run:{r['id']}"] = n
        say(progress, f"run {r['id']}: {n} rows")
    return counts
