"""Querying and managing the store: query, patterns, show, paths, runs, stats, store, export, push."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

import click

from kgexplain.errors import StoreError, UsageError
from kgexplain.store import StoreSpec, is_bolt_url, queries
from kgexplain.store.cypher import is_write_query
from kgexplain.store.graph import best_paths
from kgexplain.store.transfer import FORMATS, export, push

from .context import progress_of, status
from .options import output_options, store_options
from .output import emit_object, emit_rows, table


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``name=value`` pairs; values are JSON when they parse as JSON (numbers, lists, true), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"bad parameter {pair!r}", hint="write -p name=value")
        name, value = pair.split("=", 1)
        try:
            params[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[name.strip()] = value
    return params


@click.command("query")
@click.argument("cypher")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A query parameter ($NAME); the value is read as JSON when it is JSON.",
)
@click.option("--write", is_flag=True, help="Allow the query to modify the store.")
@click.option("--timeout", type=float, default=None, help="Stop an embedded query after this many seconds.")
@store_options
@output_options
@click.pass_context
def query_command(
    ctx: click.Context,
    cypher: str,
    params: tuple[str, ...],
    write: bool,
    timeout: float | None,
    store: StoreSpec,
    fmt: str,
) -> None:
    """Run a Cypher query (read-only unless --write).

    On the embedded store the query runs in a child process (an engine crash cannot take the store with it),
    the Neo4j forms type(r), elementId(n), toInteger(x) and toFloat(x) are translated, and columns without AS are
    named by their text. A --write query waits while another process writes the store (KGEXPLAIN_STORE_WAIT).
    """
    values = parse_params(params)
    if not write and is_write_query(cypher):
        raise UsageError("this query writes to the store", hint="pass --write to allow it")
    result = store.query(cypher, values, write=write, timeout=timeout, progress=progress_of(ctx))
    emit_rows(result.records(), fmt, result.columns)


@click.command("patterns")
@click.option("--run", default=None, help="Only this run (see `kgexplain runs`).")
@click.option("--model", default=None, help="Architecture (vgg16) or model id (vgg16@...).")
@click.option("--layer", default=None, help="Layer name, e.g. conv5_3.")
@click.option("--filter", "filter_", type=int, default=None, help="Filter (channel) number.")
@click.option("--top", type=click.IntRange(min=1), default=20)
@store_options
@output_options
def patterns_command(
    run: str | None, model: str | None, layer: str | None, filter_: int | None, top: int, store: StoreSpec, fmt: str
) -> None:
    """The highest-scoring patterns with their prior positions (pixels) and best patch."""
    with store.read() as db:
        rows = queries.patterns(db, run=run, model=model, layer=layer, filter=filter_, top=top)
    emit_rows(rows, fmt, ["pattern", "layer", "filter", "k", "score", "mu_x", "mu_y", "sigma", "fires", "patch"])


@click.command("show")
@click.argument("pattern_id")
@click.option("--limit", type=click.IntRange(min=1), default=10, help="Parents, children and images to list.")
@store_options
@output_options
def show_command(pattern_id: str, limit: int, store: StoreSpec, fmt: str) -> None:
    """One pattern with its parents, children and top images."""
    with store.read() as db:
        p = queries.pattern(db, pattern_id, limit)
    if fmt != "table":
        emit_object(p, "json")
        return
    head = {k: v for k, v in p.items() if not isinstance(v, list)}
    lines = [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in head.items()]
    for part in ("parents", "children", "images"):
        lines += ["", f"{part} ({len(p[part])}):", table(p[part]) if p[part] else "(none)"]
    click.echo("\n".join(lines))


@click.command("paths")
@click.argument("source")
@click.argument("target", required=False)
@click.option("--max-hops", type=click.IntRange(min=1, max=8), default=3)
@click.option("--k", type=click.IntRange(min=0), default=5, help="Best paths to return (0 with --to-layer: all).")
@click.option(
    "--direction",
    type=click.Choice(["up", "down"]),
    default="up",
    help="up: towards parents (higher layers); down: towards children.",
)
@click.option("--to-layer", default=None, help="Only paths that end in this layer.")
@store_options
@output_options
@click.pass_context
def paths_command(
    ctx: click.Context,
    source: str,
    target: str | None,
    max_hops: int,
    k: int,
    direction: str,
    to_layer: str | None,
    store: StoreSpec,
    fmt: str,
) -> None:
    """The strongest co-activation paths from SOURCE (to TARGET), ranked by the product of edge strengths."""
    with store.read() as db:
        found = best_paths(db, source, target, max_hops=max_hops, k=k, direction=direction, to_layer=to_layer)
    if not found:  # say why on stderr; the table (or JSON) stays empty
        towards = "parents, in the layers above" if direction == "up" else "children, in the layers below"
        end = f" to {target}" if target else f" ending in {to_layer}" if to_layer else ""
        status(
            ctx,
            f"no co-activation path from {source}{end} in at most {max_hops} hops towards its {towards} "
            f"(--direction {'down' if direction == 'up' else 'up'} searches the other way, --max-hops further)",
        )
    emit_rows([p.to_dict() for p in found], fmt, ["hops", "score", "path"])


@click.group("runs", invoke_without_command=True)
@store_options
@output_options
@click.pass_context
def runs_group(ctx: click.Context, store: StoreSpec, fmt: str) -> None:
    """List the runs in the store (`kgexplain runs delete RUN` removes one)."""
    ctx.ensure_object(dict)
    ctx.obj["store"] = store
    if ctx.invoked_subcommand is None:
        with store.read() as db:
            rows = queries.runs(db)
        emit_rows(rows, fmt, ["run", "kind", "model", "data", "status", "started", "finished"])


@runs_group.command("delete")
@click.argument("run_id")
@click.option(
    "--with-dependents",
    is_flag=True,
    help="Also delete the runs made on this build (part graphs learnt on it, localisations with them).",
)
@store_options
@click.pass_context
def runs_delete(ctx: click.Context, run_id: str, with_dependents: bool, store: StoreSpec) -> None:
    """Delete RUN_ID and everything it wrote (shared models, layers and images stay). A build that part graphs
    were learnt on is kept unless --with-dependents deletes them too: their templates use its patterns."""
    given = ctx.obj["store"]  # options given before `delete` count where none are given after it
    spec = replace(
        given, **{f.name: getattr(store, f.name) for f in fields(store) if getattr(store, f.name) is not None}
    )
    with spec.open_for_writing(progress_of(ctx)) as db:  # waits while another process writes
        dependents = queries.dependent_runs(db, run_id)
        if dependents and not with_dependents:
            raise UsageError(
                f"{len(dependents)} run(s) were made on {run_id}: {', '.join(dependents)}",
                hint=f"`kgexplain runs delete {run_id} --with-dependents` deletes them too, or delete them first",
            )
        for dependent in dependents:
            db.delete_run(dependent)
            click.echo(f"deleted run {dependent}")
        if not db.delete_run(run_id):
            raise UsageError(f"no run {run_id!r} in the store", hint="`kgexplain runs` lists them")
    click.echo(f"deleted run {run_id}")


@click.command("stats")
@store_options
@output_options
def stats_command(store: StoreSpec, fmt: str) -> None:
    """Counts per label and relationship, and patterns per run and layer."""
    with store.read() as db:
        s = queries.stats(db)
    if fmt == "json":
        emit_object(s, "json")
        return
    rows = [{"what": k, "count": v} for k, v in s["counts"].items()]
    text = table(rows)
    if s["patterns_per_layer"]:
        text += "\n\n" + table(s["patterns_per_layer"])
    click.echo(text) if fmt == "table" else emit_rows(rows, fmt)


@click.group("store")
def store_group() -> None:
    """Initialise, upgrade or drop the store."""


@store_group.command("init")
@store_options
def store_init(store: StoreSpec) -> None:
    """Create the schema (tables, constraints, indexes); safe to run again."""
    with store.open() as db:
        db.init_schema()
        click.echo(f"store {db.url} ready (schema v{db.schema.version}, {db.backend})")


@store_group.command("upgrade")
@store_options
def store_upgrade(store: StoreSpec) -> None:
    """Add what a newer schema has (new tables, columns, indexes) to an existing store."""
    with store.open() as db:
        added = db.upgrade()
        click.echo(f"store {db.url} at schema v{db.schema.version}; added: {', '.join(added) or 'nothing'}")


@store_group.command("drop")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@store_options
def store_drop(yes: bool, store: StoreSpec) -> None:
    """Delete every node, relationship and table of the store (artifacts are kept)."""
    if not yes:
        click.confirm(f"Delete everything in {store.url}?", abort=True)
    with store.open() as db:
        db.drop()
        click.echo(f"dropped {db.url}")


@store_group.command("info")
@store_options
@output_options
def store_info(store: StoreSpec, fmt: str) -> None:
    """Backend, location, schema version and artifacts folder."""
    with store.open(read_only=True) as db:
        info = {
            "store": db.url,
            "backend": db.backend,
            "schema_version": db.stored_schema_version(),
            "code_schema_version": db.schema.version,
            "artifacts": str(db.artifacts.root),
        }
    emit_object(info, fmt)


@store_group.command("check")
@store_options
@output_options
def store_check(store: StoreSpec, fmt: str) -> None:
    """Check every run against what it recorded when it was written: counts, ids, and that each id is found by
    its key. Exits 1 when a run is damaged (then `kgexplain runs delete RUN` and run its command again)."""
    checks = store.check()
    rows = [{**c.to_dict(), "problems": "; ".join(c.problems)} for c in checks]
    emit_rows(rows, fmt, ["run", "kind", "status", "problems"])
    damaged = [c.run for c in checks if c.status == "damaged"]
    if "(store)" in damaged:
        raise StoreError(
            "the store's database file cannot be read",
            hint="keep a copy of the folder, then build into a new store (README 'Reliability')",
        )
    if damaged:
        raise StoreError(
            f"{len(damaged)} damaged run(s): {', '.join(damaged)}",
            hint="`kgexplain runs delete RUN`, then run the command that made it again (README 'Reliability')",
        )


@click.command("export")
@click.option("--format", "format_", type=click.Choice(FORMATS), required=True)
@click.option(
    "--out", required=True, type=click.Path(), help="Output file (graphml, jsonl; - = standard output) or folder (csv)."
)
@click.option("--run", default=None, help="Only this run (plus the shared models, layers, filters, images).")
@store_options
@click.pass_context
def export_command(ctx: click.Context, format_: str, out: str, run: str | None, store: StoreSpec) -> None:
    """Export the store (or one run) as GraphML, JSON lines or CSV."""
    with store.read() as db:
        counts = export(db, format_, out, run)
    status(ctx, ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    done = f"wrote {sum(counts.values())} nodes and relationships to {'standard output' if out == '-' else out}"
    if out == "-":  # the stream is on standard output: the summary goes beside the status lines
        status(ctx, done)
    else:
        click.echo(done)


@click.command("push")
@click.option("--to", "target", required=True, metavar="URL", help="The Neo4j to write to (bolt://HOST:7687).")
@click.option("--run", default=None, help="Only this run.")
@click.option("--to-user", default=None, help="Target user (default: NEO4J_USERNAME).")
@click.option("--to-password", default=None, help="Target password (default: NEO4J_PASSWORD).")
@click.option("--to-database", default=None, help="Target database (default neo4j).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Rows per UNWIND batch.")
@store_options
@click.pass_context
def push_command(
    ctx: click.Context,
    target: str,
    run: str | None,
    to_user: str | None,
    to_password: str | None,
    to_database: str | None,
    batch_size: int | None,
    store: StoreSpec,
) -> None:
    """Copy the store (or one run) into Neo4j; pushing again changes nothing."""
    to = StoreSpec(target, to_user or store.user, to_password or store.password, to_database, batch_size=batch_size)
    if not is_bolt_url(to.url):
        raise UsageError(f"--to must be a bolt:// or neo4j:// URL, not {target!r}")
    with store.read() as source:
        to = replace(to, artifacts=str(source.artifacts.root))
        with to.open() as dest:
            counts = push(source, dest, run, progress=progress_of(ctx))
    click.echo(f"pushed {sum(counts.values())} rows to {target}")
