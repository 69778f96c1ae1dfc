"""CUB-200-2011 in its own file layout.

``root/images.txt`` (id, relative path), ``image_class_labels.txt`` (id, class id), ``classes.txt`` (class id,
name), ``bounding_boxes.txt`` (id, x, y, w, h), ``train_test_split.txt`` (id, 1 = train), ``parts/parts.txt`` (part
id, name) and ``parts/part_locs.txt`` (id, part id, x, y, visible), images under ``root/images/``.

As in the explanatory-graph code, objects are cropped to their box (use ``Framing(crop="box")``, the source's
``preferred_crop``), boxes smaller than 50 px are dropped, only visible parts are kept, and the ``forehead`` part
is also offered as ``head`` (the papers' head/back/tail are CUB's forehead, back and tail).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from kgexplain.data.base import ImageSource, Point, Record, files_fingerprint
from kgexplain.data.images import MIN_SIDE, load_rgb
from kgexplain.errors import DataError

REQUIRED = (
    "images.txt",
    "image_class_labels.txt",
    "classes.txt",
    "bounding_boxes.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
)
ALIASES = {"forehead": "head"}


def _rows(root: Path, name: str, min_cols: int) -> list[list[str]]:
    rows = []
    for n, line in enumerate((root / name).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < min_cols:
            raise DataError(f"{root / name}:{n}: expected {min_cols} columns, got {len(parts)}")
        rows.append(parts)
    return rows


class CubDataset(ImageSource):
    """CUB-200-2011; ``classes`` selects classes by id (``1``) or by a part of the name (``Albatross``)."""

    preferred_crop = "box"

    def __init__(
        self,
        root: str | Path,
        classes: list[str] | None = None,
        split: str = "all",
        min_box: float = 50.0,
        min_side: int = MIN_SIDE,
    ) -> None:
        self.root = Path(root).expanduser()
        missing = [f for f in REQUIRED if not (self.root / f).is_file()]
        if missing:
            raise DataError(
                f"{self.root} is not a CUB-200-2011 folder: missing {', '.join(missing)}",
                hint="point --cub at the CUB_200_2011 folder that holds images.txt",
            )
        if split not in ("train", "test", "all"):
            raise DataError(f"unknown split {split!r}", hint="use train, test or all")
        try:
            paths = {r[0]: r[1] for r in _rows(self.root, "images.txt", 2)}
            labels = {r[0]: r[1] for r in _rows(self.root, "image_class_labels.txt", 2)}
            class_names = {r[0]: r[1] for r in _rows(self.root, "classes.txt", 2)}
            boxes = {r[0]: tuple(float(v) for v in r[1:5]) for r in _rows(self.root, "bounding_boxes.txt", 5)}
            part_names = {r[0]: " ".join(r[1:]) for r in _rows(self.root, "parts/parts.txt", 2)}
            split_file = self.root / "train_test_split.txt"
            is_train = (
                {r[0]: r[1] == "1" for r in _rows(self.root, "train_test_split.txt", 2)} if split_file.exists() else {}
            )
            locs: dict[str, dict[str, Point]] = {}
            for r in _rows(self.root, "parts/part_locs.txt", 5):
                if float(r[4]) > 0:
                    name = part_names.get(r[1], r[1]).strip().lower().replace(" ", "_")
                    pt = (float(r[2]), float(r[3]))
                    locs.setdefault(r[0], {})[name] = pt
                    if name in ALIASES:
                        locs[r[0]][ALIASES[name]] = pt
        except ValueError as e:
            raise DataError(f"malformed CUB annotation in {self.root}: {e}") from e

        wanted = None
        if classes:
            wanted = set()
            for c in classes:
                hits = {cid for cid, nm in class_names.items() if c == cid or c.lower() in nm.lower()}
                if not hits:
                    raise DataError(f"no CUB class matches {c!r}", hint="use a class id (1-200) or part of its name")
                wanted |= hits
        if split != "all" and not is_train:
            raise DataError(f"{self.root}/train_test_split.txt is missing, so split={split!r} is unknown")

        self._records: list[Record] = []
        self.min_box = min_box
        self.dropped_small = 0  # selected images left out for a box under min_box
        for image_id, rel in sorted(paths.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0]):
            cls = labels.get(image_id)
            if wanted is not None and cls not in wanted:
                continue
            if split != "all" and is_train.get(image_id) != (split == "train"):
                continue
            x, y, w, h = boxes.get(image_id, (0.0, 0.0, 0.0, 0.0))
            if w < min_box or h < min_box:
                self.dropped_small += 1
                continue
            self._records.append(
                Record(
                    id=rel,
                    path=self.root / "images" / rel,
                    label=class_names.get(cls or "", cls),
                    box=(x, y, x + w, y + h),
                    keypoints=locs.get(image_id, {}),
                    meta={"cub_id": image_id},
                )
            )
        if not self._records:
            raise DataError(f"no CUB images selected in {self.root}", hint="check --classes and --split")
        self.min_side = min_side
        self.name = f"cub:{','.join(classes) if classes else 'all'}:{split}"

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
        files = [self.root / f for f in REQUIRED]
        return files_fingerprint("cub", files, [r.id for r in self._records], base=self.root)
