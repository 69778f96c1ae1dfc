"""Jinja2 rendering of the site's pages; the same templates serve the static report and the live server."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from kgexplain.web.site import offsets_svg

STATIC = Path(__file__).parent / "static"


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
    return environment().get_template(f"{data['page']}.html").render(**ctx)


def to_json(data: dict[str, Any]) -> str:
    """A page's JSON twin: the data its template renders."""
    return json.dumps(data, default=str, separators=(",", ":"))
