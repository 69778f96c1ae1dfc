"""Jinja2 rendering of the site's pages; the same templates serve the static report and the live server."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from kgexplain.web.site import offsets_svg

STATIC = Path(__file__).parent / "static"

# What a link the site has no page for says when pointed at (the templates leave such anchors bare: ``<a>``).
NO_PAGE = (
    "no page in this report: it has pages for each layer's best patterns (report --max-patterns) and for the runs "
    "it was given; kgexplain serve shows every one"
)


@cache
def environment() -> Environment:
    return Environment(loader=PackageLoader("kgexplain.web", "templates"), autoescape=select_autoescape(["html"]))


def render(data: dict[str, Any], path: str, store_name: str = "") -> str:
    """The page at ``path`` (relative to the site root, e.g. ``runs/<id>.html``) as HTML; links are relative."""
    depth = path.count("/")
    twin = path.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".json"
    ctx = data | {"root": "../" * depth, "twin": twin, "store_name": store_name}
    if data["page"] == "pattern":
        ctx["graph_svg"] = offsets_svg(data, int(data["input_size"]))
    html = environment().get_template(f"{data['page']}.html").render(**ctx)
    return html.replace("<a>", f'<a title="{NO_PAGE}">')


def to_json(data: dict[str, Any]) -> str:
    """A page's JSON twin: the data its template renders."""
    return json.dumps(data, default=str, separators=(",", ":"))
