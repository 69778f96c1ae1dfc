"""COCO annotation files (``images`` with ``file_name``, ``annotations`` with ``bbox`` and ``keypoints``,
``categories`` naming the keypoints), read as entries of kgexplain's own annotations format.

Each object (an annotation that is not a crowd) is one entry: its category's name as the label, ``bbox``
``[x, y, w, h]`` as the box ``[x, y, x + w, y + h]``, and every labelled keypoint (visibility > 0) by its name. Its
id is the ``file_name``, ``FILE#ANNOTATION_ID`` for each object of a photo with several; a photo without objects is
an entry without a box. Segmentation polygons are not read (masks are image files in kgexplain's format).

``file_name`` is looked up beside the JSON file, then in COCO's own layout
(``annotations/person_keypoints_val2017.json`` next to ``val2017/``: the folder named by the file name's last ``_``
part, beside the JSON file's folder), then in an ``images`` folder there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kgexplain.data.images import known_size
from kgexplain.errors import DataError


def is_coco(doc: Any) -> bool:
    """Whether a parsed JSON document is a COCO file rather than kgexplain's format."""
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        return False
    images = doc.get("images")
    return isinstance(images, list) and any(isinstance(i, dict) and "file_name" in i for i in images)


def image_folders(file: Path) -> list[Path]:
    """Where a COCO file's ``file_name``s are looked for, in order."""
    split = file.stem.rsplit("_", 1)[-1]
    return list(dict.fromkeys([file.parent, file.parent.parent / split, file.parent.parent / "images"]))


def coco_entries(
    doc: dict[str, Any], file: Path, sizes: dict[Path, tuple[int, int] | None] | None = None
) -> list[dict[str, Any]]:
    """The entries (kgexplain's format, absolute paths) of a COCO document read from ``file``; ``sizes`` keeps the
    header sizes read (``images.known_size``) for the caller's own checks."""
    where = f"{file} (COCO)"
    categories = {c.get("id"): c for c in doc.get("categories") or [] if isinstance(c, dict)}
    images: dict[Any, str] = {}
    for k, im in enumerate(doc["images"]):
        name = im.get("file_name") if isinstance(im, dict) else None
        if not isinstance(name, str) or not name:
            raise DataError(f'{where}: images[{k}] has no "file_name"')
        images[im.get("id")] = name
    folders = image_folders(file.absolute())  # absolute: entries' paths are read relative to the JSON's folder
    located: dict[str, Path] = {}
    found_any = False
    for name in dict.fromkeys(images.values()):
        found = next((d / name for d in folders if (d / name).is_file()), None)
        located[name] = found if found is not None else folders[0] / name
        found_any |= found is not None
    if not found_any:
        raise DataError(
            f"{where}: none of its {len(located)} images was found",
            hint=f"file_name is looked up in {', '.join(str(d) for d in folders)}",
        )
    _check_frames(doc["images"], located, where, {} if sizes is None else sizes)
    objects: dict[Any, list[dict[str, Any]]] = {i: [] for i in images}
    for k, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            raise DataError(f"{where}: annotations[{k}] names no image of the file (image_id)")
        if not ann.get("iscrowd"):
            objects[ann["image_id"]].append(ann)
    entries: list[dict[str, Any]] = []
    for image_id, name in images.items():
        path = str(located[name])
        anns = objects[image_id]
        if not anns:
            entries.append({"path": path, "id": name})
        for ann in anns:
            entry: dict[str, Any] = {"path": path, "id": name if len(anns) == 1 else f"{name}#{ann.get('id')}"}
            category = categories.get(ann.get("category_id"), {})
            if category.get("name") is not None:
                entry["label"] = str(category["name"])
            bbox = ann.get("bbox")
            if bbox is not None and not (
                isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
            ):
                raise DataError(f"{where}: {name}: bbox must be [x, y, width, height], got {bbox!r}")
            if bbox and bbox[2] > 0 and bbox[3] > 0:  # an empty box (0 wide or high) is no box
                entry["box"] = [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
            entry["keypoints"] = _keypoints(ann.get("keypoints"), category.get("keypoints") or [], f"{where}: {name}")
            entries.append(entry)
    return entries


def _check_frames(
    images: list[Any], located: dict[str, Path], where: str, sizes: dict[Path, tuple[int, int] | None]
) -> None:
    """A photo whose EXIF orientation turns it a quarter, annotated on its stored pixels (the file's width and height
    are the stored ones, as tools that ignore the tag write them), would be read upright with its boxes and keypoints
    misplaced: one error naming such photos instead."""
    turned = []
    for im in images:
        w, h = im.get("width"), im.get("height")
        path = located.get(im.get("file_name"))
        if not (isinstance(w, int) and isinstance(h, int) and w != h and path is not None):
            continue
        up = known_size(path, sizes)  # None: missing or unreadable, skipped and counted later
        if up is not None and (w, h) == (up[1], up[0]):
            turned.append(f"{im['file_name']} ({w}x{h} in the file, {up[0]}x{up[1]} upright)")
    if turned:
        more = f" and {len(turned) - 1} more" if len(turned) > 1 else ""
        raise DataError(
            f"{where}: {turned[0]}{more}: annotated on the stored pixels of a photo its EXIF orientation turns",
            hint="kgexplain reads photos upright; remove the tag (exiftool -Orientation= -n FILE) or turn such photos "
            "and their annotations upright",
        )


def _keypoints(values: Any, names: list[Any], where: str) -> dict[str, list[float]]:
    """COCO's flat [x1, y1, v1, x2, ...] as {name: [x, y]} for the labelled ones (v > 0)."""
    if not values:
        return {}
    if not isinstance(values, list) or len(values) % 3 or (names and len(values) != 3 * len(names)):
        raise DataError(f"{where}: keypoints must be [x, y, visibility] for each of the category's {len(names)}")
    out = {}
    for j in range(len(values) // 3):
        x, y, v = values[3 * j : 3 * j + 3]
        if v:
            out[str(names[j]) if names else f"kp{j + 1}"] = [x, y]
    return out
