"""The annotations JSON: a format a user can write by hand.

.. code-block:: json

    {"images": [
      {"path": "birds/0001.jpg", "label": "bird", "box": [12, 30, 190, 170],
       "keypoints": {"head": [150, 60], "tail": [20, 120]}, "mask": "masks/0001.png"}
    ]}

Only ``path`` is required. Paths are relative to the JSON file. ``box`` is ``[x0, y0, x1, y1]`` in pixel-edge
coordinates; keypoints are ``[x, y]`` pixel positions (``null`` or absent when not visible); ``mask`` is an
image whose non-zero pixels are the object. A bare list of entries is accepted too, and so is a COCO file
(``data.coco``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image

from kgexplain.data.base import Box, ImageSource, Point, Record, files_fingerprint
from kgexplain.data.coco import coco_entries, is_coco
from kgexplain.data.images import MIN_SIDE, known_size, load_rgb
from kgexplain.errors import DataError
from kgexplain.workspace import temporary_beside

FORMAT = "kgexplain-annotations/1"
ANNOTATIONS_FILE = "annotations.json"  # the name `data synth` writes (and the README suggests)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_entry(i: int, entry: Any, base: Path, file: Path) -> Record:
    where = f"{file}: images[{i}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where} is not an object", hint='each entry needs at least {"path": "..."}')
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise DataError(f'{where} has no "path"', hint="give the image path relative to the JSON file")
    box: Box | None = None
    if entry.get("box") is not None:
        b = entry["box"]
        if not (isinstance(b, list) and len(b) == 4 and all(_number(v) for v in b)) or b[2] <= b[0] or b[3] <= b[1]:
            raise DataError(f"{where}: box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {b!r}")
        box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    keypoints: dict[str, Point] = {}
    kps = entry.get("keypoints") or {}
    if not isinstance(kps, dict):
        raise DataError(f'{where}: keypoints must be an object {{"name": [x, y]}}')
    for name, p in kps.items():
        if p is None:
            continue
        if not (isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p)):
            raise DataError(f"{where}: keypoint {name!r} must be [x, y] or null, got {p!r}")
        keypoints[str(name)] = (float(p[0]), float(p[1]))
    mask = entry.get("mask")
    label = entry.get("label")
    meta = {k: v for k, v in entry.items() if k not in {"path", "label", "box", "keypoints", "mask", "id"}}
    return Record(
        id=str(entry.get("id") or path),
        path=_located(base, path),
        label=str(label) if label is not None else None,
        box=box,
        keypoints=keypoints,
        mask_path=_located(base, mask) if isinstance(mask, str) and mask else None,
        meta=meta,
    )


def _located(base: Path, path: str) -> Path:
    """``path`` relative to the JSON file's folder (or absolute); a path written on Windows (``birds\\0001.jpg``)
    is read with its backslashes as separators when no file has the name as written."""
    as_written = base / path
    if "\\" in path and not as_written.exists():
        return base / path.replace("\\", "/")
    return as_written


def _check_inside(rec: Record, where: str, sizes: dict[Path, tuple[int, int] | None]) -> None:
    """The box must overlap the image and every keypoint lie on it (a box or point off the image is a typo).
    ``sizes`` remembers each file's header size: a COCO photo of a crowd is read once, not once per person."""
    if rec.box is None and not rec.keypoints:
        return
    size = known_size(rec.path, sizes) if rec.path is not None else None
    if size is None:
        return
    w, h = size
    if rec.box is not None:
        x0, y0, x1, y1 = rec.box
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            raise DataError(
                f"{where}: box {list(rec.box)} lies outside the {w}x{h} image",
                hint="boxes are [x0, y0, x1, y1] in pixels of the image file",
            )
    for name, (x, y) in rec.keypoints.items():
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise DataError(
                f"{where}: keypoint {name!r} at [{x:g}, {y:g}] lies outside the {w}x{h} image",
                hint="keypoints are [x, y] pixel positions in the image file (null when not visible)",
            )


class AnnotatedImages(ImageSource):
    """Images listed in an annotations JSON file."""

    def __init__(self, file: str | Path, min_side: int = MIN_SIDE) -> None:
        self.file = Path(file).expanduser()
        if not self.file.is_file():
            raise DataError(
                f"annotations file not found: {self.file}",
                hint="check the path given to --annotations, or to --examples in `aog learn`",
            )
        try:
            doc = json.loads(self.file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.file} is not valid JSON: {e}") from e
        sizes: dict[Path, tuple[int, int] | None] = {}  # header sizes, each file read once (COCO check, then ours)
        if is_coco(doc):  # a COCO file: its objects as entries of this format
            entries: Any = coco_entries(doc, self.file, sizes)
            doc = {"source": "coco"}
        else:
            entries = doc.get("images") if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise DataError(f'{self.file} has no "images" list', hint='write {"images": [{"path": ...}, ...]}')
        if not entries:
            raise DataError(f"{self.file} lists no images")
        base = self.file.parent
        self._records = [_parse_entry(i, e, base, self.file) for i, e in enumerate(entries)]
        for i, rec in enumerate(self._records):
            _check_inside(rec, f"{self.file}: images[{i}] ({rec.path.name if rec.path else rec.id})", sizes)
        ids = [r.id for r in self._records]
        if len(set(ids)) != len(ids):
            dup = next(x for x in ids if ids.count(x) > 1)
            raise DataError(f"{self.file}: image {dup!r} is listed twice", hint="give each entry a distinct path or id")
        self.doc_meta = {k: v for k, v in doc.items() if k != "images"} if isinstance(doc, dict) else {}
        self.min_side = min_side
        # the folder as resolved: an annotations file named from its own folder (`annotations.json`) has no parent
        self.name = f"annotations:{self.file.resolve().parent.name}/{self.file.name}"

    def __len__(self) -> int:
        return len(self._records)

    def record(self, index: int) -> Record:
        return self._records[index]

    def records(self) -> list[Record]:
        return list(self._records)

    def load_image(self, index: int) -> Image.Image:
        path = self._records[index].path
        assert path is not None
        return load_rgb(path, self.min_side)

    def fingerprint(self) -> str:
        images = [r.path for r in self._records if r.path is not None]
        synth = self.doc_meta.get("synth")
        if isinstance(synth, dict) and synth.get("generator") == "kgexplain.synth":
            # the synthetic set: its parameters fix every file (the JSON also records how long writing took)
            return files_fingerprint("synth", images, synth, base=self.file.parent, mtime=False)
        return files_fingerprint("annotations", [self.file, *images], base=self.file.parent)


def write_annotations(file: str | Path, entries: list[dict[str, Any]], **meta: Any) -> Path:
    """Write an annotations JSON atomically (``entries`` use the format above; paths relative to ``file``)."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(file)
    tmp.write_text(json.dumps({"format": FORMAT, **meta, "images": entries}, indent=1), encoding="utf-8")
    tmp.replace(file)
    return file
