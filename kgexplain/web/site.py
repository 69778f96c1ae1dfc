"""The browsable site over a store: one function per page, each returning the page's data as a JSON-able dict (the
page's JSON twin) that one set of Jinja2 templates renders, for the static report and the live server alike.

Every page lives at a path of the same shape in both (``index.html``, ``runs/<id>.html``, ``patterns/<id>.html``,
``images/<id>.html``, ``paths/<id>.html``; the twin is the same path with ``.json``), so links between pages are
relative and work from a file system and from a server. Ids are made path-safe by :func:`slug`. Files (patches,
contact sheets, maps, source images) go through a :class:`Files` policy: the report copies them into ``assets/``
under their content hash, the server streams them from the store.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kgexplain.data.base import Framing
from kgexplain.data.images import open_image, orientation, to_rgb, upright
from kgexplain.errors import UsageError
from kgexplain.plots import save_png
from kgexplain.store import browse
from kgexplain.store import queries as Q
from kgexplain.store.base import GraphStore
from kgexplain.tables import natural_key

KINDS = ("runs", "patterns", "images", "paths")
RENDERED = ".png"  # "<map>.npy" + RENDERED names the map drawn as a PNG (see artifact_content)
PAGE = 24  # patterns per layer and page on a run page
IMAGE_PAGE = 60  # patterns per page on an image page


def slug(node_id: str) -> str:
    """A reversible, path- and URL-safe form of a node id (ids hold '/' and ':')."""
    return (
        node_id.replace("~", "~7E")
        .replace("/", "~2F")
        .replace(":", "~3A")
        .replace("?", "~3F")
        .replace("#", "~23")
        .replace("%", "~25")
    )


def unslug(text: str) -> str:
    for code, ch in (("~2F", "/"), ("~3A", ":"), ("~3F", "?"), ("~23", "#"), ("~25", "%"), ("~7E", "~")):
        text = text.replace(code, ch)
    return text


def href(kind: str, node_id: str, page: int = 0, ext: str = "html") -> str:
    """The page's path relative to the site root (pages after the first: ``.p2.html``...)."""
    suffix = f".p{page + 1}" if page else ""
    return f"{kind}/{slug(node_id)}{suffix}.{ext}"


@dataclass
class Files:
    """How a page refers to a stored file: ``artifact(rel)`` for a store artifact, ``image(id, path)`` for a source
    image. Both return a URL relative to the site root, or None when the file is not there."""

    artifact: Callable[[str], str | None]
    image: Callable[[str, str | None], str | None]


class Site:
    def __init__(
        self,
        store: GraphStore,
        files: Files,
        runs: list[str] | None = None,
        allow: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.store = store
        self.files = files
        self.only = set(runs) if runs else None
        self.allow = allow  # which pages exist (the report exports a subset); None: all
        self.max_pages: int | None = None  # run pages beyond this are not offered (the report's cap)
        # The static report: a file cannot take ``?layer=``, so an image page shows its strongest patterns of each
        # layer under the layer's heading, and its layer links jump there (the server filters and pages instead).
        self.static = False
        self._framing: dict[str, tuple[dict[str, list[float]], int]] = {}  # run -> (frames, input size)
        self._whole: dict[str, bool] = {}  # measurement run -> framed its images whole

    def link(self, kind: str, node_id: str) -> str | None:
        """The page's path, or None where the site has no such page (links then show as plain text)."""
        return href(kind, node_id) if self.allow is None or self.allow(kind, node_id) else None

    # -- pages -------------------------------------------------------------------------------------------------
    def index(self) -> dict[str, Any]:
        rows = []
        for r in Q.runs(self.store, with_stats=True, newest_first=True):
            if self.only is not None and r["run"] not in self.only:
                continue
            stats = _json(r.pop("stats"))
            rows.append(r | {"href": href("runs", r["run"]), "headline": headline(str(r["kind"]), stats)})
        return {"page": "index", "title": "kgexplain store", "runs": rows, "counts": self.store.counts()}

    def run(self, run_id: str, page: int = 0) -> dict[str, Any]:
        row = Q.run(self.store, run_id)
        if row is None or (self.only is not None and run_id not in self.only):
            raise UsageError(f"no run {run_id!r} in the store", hint="the index page lists the runs")
        stats, config = _json(row["stats"]), _json(row["config"])
        layers = []
        pages = 1
        for lay in browse.run_layers(self.store, run_id):
            n = int(lay["patterns"])
            pages = max(pages, math.ceil(n / PAGE))
            pats = browse.top_patterns(self.store, run_id, str(lay["layer"]), page * PAGE, PAGE)
            for p in pats:
                p["href"] = self.link("patterns", p["pattern"])
                p["patch_url"] = self.files.artifact(p["patch"]) if p["patch"] else None
            sheets = stats.get("sheets")
            sheet_rel = sheets.get(lay["layer"]) if isinstance(sheets, dict) else None
            layers.append(lay | {"top": pats, "sheet_url": self.files.artifact(sheet_rel) if sheet_rel else None})
        if self.max_pages is not None:
            pages = min(pages, self.max_pages)
        metrics = browse.run_metrics(self.store, run_id)
        for m in metrics:
            m["artifact_url"] = self.files.artifact(m["artifact"]) if m.get("artifact") else None
        images = [
            im | {"href": self.link("images", im["image"]), "url": self.files.image(im["image"], im["path"])}
            for im in browse.run_images(self.store, run_id, 0, 48)
        ]
        part = Q.part(self.store, run_id) if row["kind"] == "aog" else None
        calibration = config.get("calibration") if part else None
        templates = _templates(Q.template_uses(self.store, run_id)) if part else []
        for t in templates:
            for u in t["uses"]:
                u["href"] = self.link("patterns", u["pattern"])
        return {
            "page": "run",
            "title": f"run {run_id}",
            "run": run_id,
            "kind": row["kind"],
            "model": row["model"],
            "status": row["status"],
            "config": config,
            "stats": _scalars(stats),
            "headline": headline(str(row["kind"]), stats),
            "layers": layers,
            "metrics": metrics,
            "metric_tables": metric_tables(metrics),
            "images": images,
            "part": part,
            "calibration": calibration if isinstance(calibration, dict) else None,
            "templates": templates,
            "build_href": href("runs", str(config["build"])) if part and config.get("build") else None,
            "pager": _pager("runs", run_id, page, pages),
        }

    def pattern(self, pattern_id: str) -> dict[str, Any]:
        p = Q.pattern(self.store, pattern_id, limit=12, sizes=True)
        if self.only is not None and p["run"] not in self.only:
            raise UsageError(f"no pattern {pattern_id!r} in this report", hint="the index page lists the runs")
        for key in ("parents", "children"):
            for e in p[key]:
                e["href"] = self.link("patterns", e["pattern"])
        for im in p["images"]:
            im["href"] = self.link("images", im["image"])
            im["url"] = self.files.image(im["image"], im["path"])
            im["patch_url"] = self.files.artifact(im["patch"]) if im["patch"] else None
        siblings = browse.filter_patterns(self.store, p["run"], p["layer"], int(p["filter"]))
        for s in siblings:
            s["href"] = self.link("patterns", s["pattern"])
        frames, size = self.framing(str(p["run"]))
        for im in p["images"]:  # the inferred position on the source image (positions are framed pixels)
            im["sx"], im["sy"], im["left"], im["top"] = on_source(im, frames.get(im["image"]), size)
        return p | {
            "page": "pattern",
            "title": f"pattern {pattern_id}",
            "run_href": href("runs", p["run"]),
            "paths_href": self.link("paths", pattern_id),
            "siblings": siblings,
            "input_size": size,
        }

    def framing(self, run_id: str) -> tuple[dict[str, list[float]], int]:
        """How a build framed its images: the source region each was cropped to (``stats.frames``, image id ->
        [x0, y0, x1, y1]; empty for uncropped builds and for builds made before it was recorded) and the model's
        input size (224 when unknown). Read once per run."""
        if run_id not in self._framing:
            row = Q.run(self.store, run_id)
            ref = _json(row["stats"]).get("frames") if row else None
            found = artifact_file(self.store.artifacts.root, ref) if isinstance(ref, str) else None
            frames = json.loads(found.read_text()) if found is not None else {}
            self._framing[run_id] = (frames, _input_size(self.store, str(row["model"]) if row else None))
        return self._framing[run_id]

    def _whole_image(self, run_id: str) -> bool:
        """Whether a measurement run framed each image whole (resized, not cropped); read once per run."""
        if run_id not in self._whole:
            row = Q.run(self.store, run_id)
            self._whole[run_id] = Framing.described_crop(_json(row["config"]).get("framing") if row else "") == "none"
        return self._whole[run_id]

    def image(self, image_id: str, page: int = 0, layer: str | None = None) -> dict[str, Any]:
        im = browse.image(self.store, image_id)
        if im is None:
            raise UsageError(f"no image {image_id!r} in the store", hint="images are listed on run and pattern pages")
        layers = browse.image_layers(self.store, image_id)
        # The report: each layer's strongest, grouped by layer (a page's worth shared by the layers, at least 12 each).
        per_layer = max(12, IMAGE_PAGE // max(1, len(layers))) if self.static else None
        if per_layer is not None:
            fires = [f for name in layers for f in browse.image_patterns(self.store, image_id, name, 0, per_layer)]
        else:
            fires = browse.image_patterns(self.store, image_id, layer, page * IMAGE_PAGE, IMAGE_PAGE)
        if self.only is not None:
            fires = [f for f in fires if f["run"] in self.only]
        url = self.files.image(image_id, im["path"])
        for f in fires:
            f["href"] = self.link("patterns", f["pattern"])
            f["patch_url"] = self.files.artifact(f["patch"]) if f["patch"] else None
            f["crop"] = None
            if not f["patch_url"] and url:  # no stored patch (not among the pattern's best): crop the page's image
                frames, size = self.framing(str(f["run"]))
                f["crop"] = crop_style(f | {"w": im["w"], "h": im["h"]}, frames.get(image_id), size)
        maps = [m for m in browse.image_maps(self.store, image_id) if self.only is None or m["run"] in self.only]
        for m in maps:
            m["map_url"], m["low"], m["high"] = None, None, None
            m["run_href"] = self.link("runs", str(m["run"]))
            # A map of the whole image resized to the model's square input is drawn back at the image's aspect.
            m["display"] = _fit(int(im["w"]), int(im["h"]), MAP_PX) if self._whole_image(str(m["run"])) else None
            found = artifact_file(self.store.artifacts.root, m["artifact"]) if m.get("artifact") else None
            if found is not None and found.suffix == ".npy":
                arr = np.load(found)
                m["low"], m["high"] = float(arr.min()), float(arr.max())
                m["map_url"] = self.files.artifact(m["artifact"] + RENDERED)
        kps = browse.image_knowledge_points(self.store, image_id)
        kps = [k for k in kps if self.only is None or k["run"] in self.only]
        located: list[dict[str, Any]] = []
        for loc in browse.image_localizations(self.store, image_id):
            if self.only is not None and loc["run"] not in self.only:
                continue
            extra = _json(loc["extra"])
            located.append(
                {
                    "run": loc["run"], "run_href": self.link("runs", str(loc["run"])), "part": loc["part"],
                    "confidence": loc["confidence"], "found": bool(extra.get("found")), "x": extra.get("x"),
                    "y": extra.get("y"), "box": extra.get("box"), "flipped": extra.get("flipped"),
                    "template": extra.get("template"), "score": extra.get("score"),
                }
            )  # fmt: skip
        return {
            "page": "image",
            "title": f"image {image_id}",
            "image": image_id,
            "path": Q.image_path(self.store, im["path"]),
            "label": im["label"],
            "w": im["w"],
            "h": im["h"],
            "url": self.files.image(image_id, im["path"]),
            "layer": layer,
            "layers": [
                {"layer": name, "href": f"#layer-{name}" if self.static else f"?layer={name}"} for name in layers
            ],
            "by_layer": self.static,
            "per_layer": per_layer,
            "fires": fires,
            "maps": maps,
            "knowledge_points": kps,
            "localizations": located,
            "pager": _pager(
                "images", image_id, page, page + 2 if len(fires) == IMAGE_PAGE and not self.static else page + 1
            ),
        }

    def paths(self, pattern_id: str, depth: int = 3) -> dict[str, Any]:
        Q.pattern(self.store, pattern_id, limit=1)  # a clear error for an unknown id
        up = browse.pattern_paths(self.store, pattern_id, "up", depth)
        down = browse.pattern_paths(self.store, pattern_id, "down", depth)
        for e in (*up, *down):
            e["src_href"], e["dst_href"] = self.link("patterns", e["src"]), self.link("patterns", e["dst"])
        return {
            "page": "paths",
            "title": f"paths from {pattern_id}",
            "pattern": pattern_id,
            "pattern_href": self.link("patterns", pattern_id),
            "depth": depth,
            "up": up,
            "down": down,
        }

    def metrics(self) -> dict[str, Any]:
        """Curves across layers: one chart per figure (SID, concentration, knowledge points, ...), one line per run
        and checkpoint."""
        charts: dict[str, dict[str, Any]] = {}
        for r in browse.layer_curves(self.store):
            if self.only is not None and r["run"] not in self.only:
                continue
            key = f"{r['kind']}/{r['name']}"
            chart = charts.setdefault(key, {"kind": r["kind"], "name": r["name"], "layers": [], "lines": {}})
            if r["layer"] not in chart["layers"]:
                chart["layers"].append(r["layer"])
            label = f"{r['run']} · {r['checkpoint']}" if r["checkpoint"] else str(r["run"])
            chart["lines"].setdefault(label, {})[r["layer"]] = r["value"]
        out = []
        for chart in charts.values():
            chart["svg"] = line_chart(chart["layers"], chart["lines"])
            chart["lines"] = [{"label": k, "values": v} for k, v in chart["lines"].items()]
            out.append(chart)
        return {"page": "metrics", "title": "figures across layers", "charts": out, "training": self._training()}

    def _training(self) -> list[dict[str, Any]]:
        """Knowledge-point figures through training: checkpoints on x (in natural order), one line per layer; only
        where the store holds two checkpoints or more."""
        charts: dict[str, dict[str, dict[str, Any]]] = {}
        for r in browse.layer_curves(self.store, ("kp_layer",)):
            if not r["checkpoint"] or (self.only is not None and r["run"] not in self.only):
                continue
            charts.setdefault(str(r["name"]), {}).setdefault(str(r["layer"]), {})[str(r["checkpoint"])] = r["value"]
        out = []
        for name, lines in charts.items():
            checkpoints = sorted({c for series in lines.values() for c in series}, key=natural_key)
            if len(checkpoints) < 2:
                continue
            out.append(
                {
                    "name": name,
                    "checkpoints": checkpoints,
                    "lines": [{"layer": k, "values": v} for k, v in lines.items()],
                    "svg": line_chart(checkpoints, lines),
                }
            )
        return out

    def get(self, kind: str, node_id: str, page: int = 0, layer: str | None = None) -> dict[str, Any]:
        if kind == "runs":
            return self.run(node_id, page)
        if kind == "patterns":
            return self.pattern(node_id)
        if kind == "images":
            return self.image(node_id, page, layer)
        if kind == "paths":
            return self.paths(node_id)
        raise UsageError(f"no page kind {kind!r}", hint=f"one of {', '.join(KINDS)}")


def metric_tables(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's figures as one table per kind, easier to read than one row per figure: where the figures are per
    layer, a row per (checkpoint, layer) and a column per name; otherwise a row per name and a column per
    checkpoint. Figures with a file stay in the plain list only."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for m in metrics:
        if not m.get("artifact"):
            kinds.setdefault(str(m["kind"]), []).append(m)
    out = []
    for kind, ms in kinds.items():
        names = list(dict.fromkeys(str(m["name"]) for m in ms))
        checkpoints = list(dict.fromkeys(m.get("checkpoint") or "" for m in ms))
        if any(m.get("layer") for m in ms):
            keys = list(dict.fromkeys((m.get("checkpoint") or "", m.get("layer") or "") for m in ms))
            cells = {(m.get("checkpoint") or "", m.get("layer") or "", str(m["name"])): m["value"] for m in ms}
            rows = [{"head": [c, lay], "cells": [cells.get((c, lay, n)) for n in names]} for c, lay in keys]
            out.append({"kind": kind, "columns": ["checkpoint", "layer", *names], "rows": rows})
        else:
            by_name = {(str(m["name"]), m.get("checkpoint") or ""): m["value"] for m in ms}
            rows = [{"head": [n], "cells": [by_name.get((n, c)) for c in checkpoints]} for n in names]
            out.append({"kind": kind, "columns": ["name", *(c or "value" for c in checkpoints)], "rows": rows})
    return out


def _templates(uses: list[dict[str, Any]], per_template: int = 12) -> list[dict[str, Any]]:
    """An AOG run's USES rows grouped by template, each with its pattern count and strongest ``per_template``."""
    out: dict[int, dict[str, Any]] = {}
    for r in uses:
        t = out.setdefault(int(r["k"]), {"k": r["k"], "example": r["example"], "flipped": r["flipped"], "uses": [],
                                         "patterns": 0})  # fmt: skip
        t["patterns"] += 1
        if len(t["uses"]) < per_template:
            t["uses"].append({k: r[k] for k in ("pattern", "layer", "dx", "dy", "weight")})
    return list(out.values())


def headline(kind: str, stats: dict[str, Any]) -> str:
    """One line of a run's main figures for the index: a build's size and stability ratio, a part graph's
    templates, a localisation's finds, ..."""
    parts = []
    for key in ("patterns", "edges", "images", "templates", "uses", "localisations", "found", "found_rate", "seconds"):
        v = stats.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}")
    stability = stats.get("stability")
    ratio = stability.get("ratio") if isinstance(stability, dict) else stability
    if isinstance(ratio, int | float) and not isinstance(ratio, bool) and math.isfinite(ratio):
        parts.append(f"stability ratio {ratio:.3g}")
    return ", ".join(parts)


def _pager(kind: str, node_id: str, page: int, pages: int) -> dict[str, Any]:
    return {
        "page": page + 1,
        "pages": pages,
        "prev": href(kind, node_id, page - 1) if page > 0 else None,
        "next": href(kind, node_id, page + 1) if page + 1 < pages else None,
    }


def _json(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        out = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _scalars(d: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """A run's stats as flat rows: scalars, with nested dicts (timings, stability, ...) as ``outer.inner`` keys down
    to ``depth`` levels; lists are left out (they are on the page elsewhere or in the JSON twin of the run)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, str | int | float | bool) or v is None:
            out[prefix + k] = v
        elif isinstance(v, dict) and depth > 1:
            out |= _scalars(v, f"{prefix}{k}.", depth - 1)
    return out


def on_source(im: dict[str, Any], region: list[float] | None, size: int) -> tuple[float, float, float, float]:
    """A framed position (im's x, y on the ``size``-pixel model input) on its source image of im's w x h pixels,
    cropped to ``region`` (pixel edges; None: the whole image): (x, y) in source pixels and as percentages of the
    image's width and height (where a mark goes)."""
    w, h = float(im.get("w") or size), float(im.get("h") or size)
    x0, y0, x1, y1 = region if region else (0.0, 0.0, w, h)
    ex = x0 + (float(im["x"] or 0) + 0.5) * (x1 - x0) / size  # edge coordinates
    ey = y0 + (float(im["y"] or 0) + 0.5) * (y1 - y0) / size
    return ex - 0.5, ey - 0.5, 100 * ex / w, 100 * ey / h


def crop_style(f: dict[str, Any], region: list[float] | None, size: int) -> str:
    """CSS that shows the patch around a framed position (f's x, y) as a crop of the source image (f's w x h) set as
    a card's background: the square the build's patches cover (70 px at 224, in framed pixels), mapped through the
    image's crop ``region`` and shifted inside the source image (a stored patch is shifted inside the framed one,
    so near a crop's edge the two can differ by the shift)."""
    w, h = float(f.get("w") or size), float(f.get("h") or size)
    x0, y0, x1, y1 = region if region else (0.0, 0.0, w, h)
    sx, sy, _, _ = on_source(f, region, size)
    patch = max(8, math.floor(70 * size / 224 + 0.5))  # features.geometry.scaled_patch_size (which needs torch)
    # the square patch on the source (a region with x0 > x1 is an image mined mirrored: the same square)
    sw, sh = min(patch * abs(x1 - x0) / size, w), min(patch * abs(y1 - y0) / size, h)
    cx = min(max(sx + 0.5 - sw / 2, 0.0), w - sw)
    cy = min(max(sy + 0.5 - sh / 2, 0.0), h - sh)
    px = 100 * cx / (w - sw) if w > sw else 0.0
    py = 100 * cy / (h - sh) if h > sh else 0.0
    return f"background-size: {100 * w / sw:.2f}% {100 * h / sh:.2f}%; background-position: {px:.2f}% {py:.2f}%"


def _input_size(store: GraphStore, model: str | None) -> int:
    return (browse.input_size(store, model) if model else None) or 224


def offsets_svg(p: dict[str, Any], size: int, px: int = 320) -> str:
    """The pattern on the image plane with arrows to its parents (up) and children (down), each at its learnt
    offset: a parent sits at mu - (dx, dy), a child at mu + (dx, dy) (PARENT edges hold parent-to-child
    displacements). Drawn as SVG with links to their pages."""
    k = px / max(1.0, float(size))
    mx, my = float(p["mu_x"] or 0) * k, float(p["mu_y"] or 0) * k
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="offsets" width="{px}" height="{px}" '
        f'viewBox="0 0 {px} {px}" role="img" aria-label="offsets to parents and children">',
        '<defs><marker id="ah" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="context-stroke"/></marker></defs>',
        f'<rect x="0" y="0" width="{px}" height="{px}" fill="#f7f7f4" stroke="#999"/>',
    ]
    for key, sign, colour in (("parents", -1.0, "#c0392b"), ("children", 1.0, "#2471a3")):
        for e in p[key]:
            x = mx + sign * float(e["dx"] or 0) * k
            y = my + sign * float(e["dy"] or 0) * k
            mark = (
                f"<title>{html.escape(str(e['pattern']))} (weight {float(e['weight'] or 0):.3g})</title>"
                f'<line x1="{mx:.1f}" y1="{my:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="1.5" '
                f'marker-end="url(#ah)"/><circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'
            )
            out.append(f'<a href="../{e["href"]}">{mark}</a>' if e.get("href") else f"<g>{mark}</g>")
    out.append(f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="6" fill="#222"/></svg>')
    return "".join(out)


PALETTE = ("#1f5f8b", "#c0392b", "#2e7d32", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b")


def line_chart(layers: list[str], lines: dict[str, dict[str, Any]], w: int = 520, h: int = 220) -> str:
    """A small SVG line chart: layers (or any labels, such as checkpoints) on x, one line per series, the y range
    from the data (labelled)."""
    vals = [float(v) for series in lines.values() for v in series.values() if v is not None]
    if not vals or not layers:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    left, right, top, bottom = 56, 44, 10, 40
    pw, ph = w - left - right, h - top - bottom

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (pw * i / max(1, len(layers) - 1) if len(layers) > 1 else pw / 2)
        return x, top + ph * (1 - (v - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h + 18 * len(lines)}">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccc"/>',
           f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{hi:.3g}</text>',
           f'<text x="{left - 6}" y="{top + ph}" text-anchor="end" font-size="11">{lo:.3g}</text>']  # fmt: skip
    for i, name in enumerate(layers):
        x, _ = xy(i, lo)
        label_y = top + ph + 16
        out.append(f'<text x="{x:.1f}" y="{label_y}" text-anchor="middle" font-size="11">{html.escape(name)}</text>')
    for j, (label, series) in enumerate(lines.items()):
        colour = PALETTE[j % len(PALETTE)]
        pts = [xy(i, float(series[n])) for i, n in enumerate(layers) if series.get(n) is not None]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        ly = h + 4 + 18 * j
        out.append(f'<rect x="{left}" y="{ly}" width="12" height="4" fill="{colour}"/>'
                   f'<text x="{left + 18}" y="{ly + 6}" font-size="11">{html.escape(label)}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def site_path(path: str) -> tuple[str, str, int, str]:
    """``kind/<slug>[.pN].(html|json)`` -> (kind, id, page index, ext)."""
    kind, _, rest = path.partition("/")
    if kind not in KINDS or not rest:
        raise UsageError(f"no page {path!r}")
    stem, dot, ext = rest.rpartition(".")
    if not dot or ext not in ("html", "json"):
        raise UsageError(f"no page {path!r}")
    page = 0
    base, dot2, tail = stem.rpartition(".")
    if dot2 and tail.startswith("p") and tail[1:].isdigit():
        stem, page = base, int(tail[1:]) - 1
    return kind, unslug(stem), page, ext


MAP_PX = 256  # a map's long side on image pages


def _fit(w: int, h: int, px: int) -> tuple[int, int]:
    """(width, height) of a w x h picture drawn ``px`` on its long side."""
    scale = px / max(w, h, 1)
    return max(1, round(w * scale)), max(1, round(h * scale))


def map_png(arr: np.ndarray, px: int = MAP_PX) -> bytes:
    """A per-pixel map as a viridis PNG of ``px`` on the long side, scaled from its own min to max (the page prints
    both under a colour bar)."""
    a = np.asarray(arr, np.float64)
    lo, hi = float(a.min()), float(a.max())
    norm = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    from matplotlib import colormaps  # lazy: matplotlib is slow to import; only colour bars need it

    rgb = (colormaps["viridis"](norm)[..., :3] * 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    scale = px / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    save_png(img, buf)
    return buf.getvalue()


def artifact_content(root: Path, rel: str) -> Path | bytes | None:
    """What a file URL of the site names: a store artifact's file, or for ``<map>.npy`` + RENDERED the map drawn as
    PNG bytes; None when it is not there."""
    if rel.endswith(".npy" + RENDERED):
        found = artifact_file(root, rel[: -len(RENDERED)])
        return map_png(np.load(found)) if found else None
    return artifact_file(root, rel)


def artifact_file(root: Path, rel: str) -> Path | None:
    """A store artifact's file, only inside the artifacts folder."""
    target = (root / rel).resolve()
    try:
        target.relative_to(root.resolve())
    except ValueError:
        return None
    return target if target.is_file() else None


SENT_IMAGE_SIDE = 1024  # a source image larger than this on its long side is sent (report, server) reduced to it
BROWSER_FORMATS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".avif")  # what every browser shows


def sendable_image(path: Path) -> tuple[bytes, str]:
    """A source image as the report keeps it and the server sends it: as it is, or else as kgexplain reads it
    (upright, RGB). When its long side exceeds SENT_IMAGE_SIDE it is reduced to that and sent as a JPEG (quality
    90), so that a report of large photos stays one that can be sent and a served page of them loads (a 6000 x
    4000 photo: 1.4 MB as it is, about 0.1 MB reduced; pages draw it 512 px, marks and crops scale with it). A
    smaller one that carries an EXIF orientation (every viewer then shows it as kgexplain reads it) or is in a
    format browsers do not show (TIFF, PPM / PGM, HEIC, JPEG 2000, CMYK JPEG) is sent as a PNG, or a JPEG for a
    JPEG."""
    data = path.read_bytes()
    try:
        with open_image(path, data) as im:
            shown = path.suffix.lower() in BROWSER_FORMATS and im.mode != "CMYK"
            if max(im.size) <= SENT_IMAGE_SIDE and orientation(im) == 1 and shown:
                return data, path.suffix.lower()
            reduce = max(im.size) > SENT_IMAGE_SIDE
            if reduce:
                im.draft("RGB", (SENT_IMAGE_SIDE, SENT_IMAGE_SIDE))  # JPEG: decoded at a fraction of its size
            small = to_rgb(upright(im))  # as kgexplain reads it, whether or not a viewer honours the tag
            small.thumbnail((SENT_IMAGE_SIDE, SENT_IMAGE_SIDE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            if reduce or path.suffix.lower() in (".jpg", ".jpeg"):
                small.save(out, "JPEG", quality=90)
                return out.getvalue(), ".jpg"
            small.save(out, "PNG")
            return out.getvalue(), ".png"
    except (OSError, ValueError, Image.DecompressionBombError):
        return data, path.suffix.lower()  # the browser may still show what Pillow cannot reduce
