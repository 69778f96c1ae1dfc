"""``kgexplain graph``: local graph algorithms on subgraphs pulled into networkx."""

from __future__ import annotations

import click

from kgexplain.errors import UsageError
from kgexplain.store import StoreSpec, queries
from kgexplain.store.graph import centrality, groups, neighbourhood, run_subgraph, write_graphml

from .options import output_options, store_options
from .output import emit_rows


@click.group("graph")
def graph_group() -> None:
    """Centrality, co-activating groups and GraphML export of subgraphs (networkx)."""


@graph_group.command("centrality")
@click.option("--run", default=None, help="The build (default: the latest; see `kgexplain runs`).")
@click.option("--layer", "layers", multiple=True, help="Restrict to these layers (repeatable).")
@click.option("--method", type=click.Choice(["pagerank", "degree"]), default="pagerank")
@click.option("--top", type=click.IntRange(min=1), default=20)
@store_options
@output_options
def centrality_command(
    run: str | None, layers: tuple[str, ...], method: str, top: int, store: StoreSpec, fmt: str
) -> None:
    """The most central patterns of a run by co-activation (PageRank, or weighted in-degree)."""
    with store.read() as db:
        g = run_subgraph(db, run if run is not None else queries.latest_build(db), list(layers) or None)
    emit_rows(centrality(g, top, method), fmt, ["pattern", "layer", "centrality", "children", "parents"])


@graph_group.command("groups")
@click.option("--run", default=None, help="The build (default: the latest; see `kgexplain runs`).")
@click.option("--layer", "layers", multiple=True, help="Restrict to these layers (repeatable).")
@click.option("--min-weight", type=float, default=0.0, help="Ignore weaker co-activation edges.")
@click.option("--min-size", type=click.IntRange(min=1), default=2)
@store_options
@output_options
def groups_command(
    run: str | None, layers: tuple[str, ...], min_weight: float, min_size: int, store: StoreSpec, fmt: str
) -> None:
    """Connected groups of co-activating patterns, largest first."""
    with store.read() as db:
        g = run_subgraph(db, run if run is not None else queries.latest_build(db), list(layers) or None)
    emit_rows(groups(g, min_weight, min_size), fmt, ["group", "size", "layers", "top_pattern"])


@graph_group.command("graphml")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--run", default=None, help="A run's patterns and PARENT edges (optionally --layer ...).")
@click.option("--layer", "layers", multiple=True)
@click.option("--around", default=None, metavar="PATTERN", help="Or: the neighbourhood of one pattern.")
@click.option("--hops", type=click.IntRange(min=1, max=8), default=2)
@click.option("--direction", type=click.Choice(["up", "down", "both"]), default="both")
@store_options
def graphml_command(
    out: str, run: str | None, layers: tuple[str, ...], around: str | None, hops: int, direction: str, store: StoreSpec
) -> None:
    """Write a subgraph (a run, or the neighbourhood of a pattern) as GraphML for Gephi, yEd, Cytoscape."""
    if (run is None) == (around is None):
        raise UsageError("give either --run or --around PATTERN")
    with store.read() as db:
        g = (
            run_subgraph(db, run, list(layers) or None)
            if run
            else neighbourhood(db, str(around), hops, direction).to_networkx(around)
        )
    write_graphml(g, out)
    where = "standard output" if out == "-" else out
    click.echo(f"wrote {g.number_of_nodes()} patterns and {g.number_of_edges()} edges to {where}", err=out == "-")
