"""bench/facing.py's mirrored copy of a data set: images, boxes and keypoints mirrored together, so the framed
(box-cropped) keypoints of a mirrored image are the mirror of the original's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from kgexplain.data import Framing
from kgexplain.data.annotations import AnnotatedImages
from kgexplain.data.synth import write_synth


def _facing_module():  # type: ignore[no-untyped-def]
    path = Path(__file__).parents[1] / "bench" / "facing.py"
    spec = importlib.util.spec_from_file_location("bench_facing", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_mirrored_copy_mirrors_pixels_boxes_and_keypoints(tmp_path: Path) -> None:
    facing = _facing_module()
    write_synth(tmp_path / "d", 4, 9, 96, ["bird"])
    ann = tmp_path / "d" / "annotations.json"
    out = facing.mirrored_set(ann, {0: True, 2: True}, tmp_path / "m")
    before, after = AnnotatedImages(ann), AnnotatedImages(out)
    framing = Framing(64, "box")
    for i in range(4):
        a, b = framing.apply(before, i), framing.apply(after, i)
        if i in (0, 2):
            assert np.array_equal(
                np.asarray(Image.open(after.record(i).path)), np.asarray(before.load_image(i))[:, ::-1]
            )
            assert np.abs(b.image.astype(int) - a.image[:, ::-1].astype(int)).max() <= 1  # the same crop, mirrored
            for name, (x, y) in a.keypoints.items():
                assert np.allclose(b.keypoints[name], (63 - x, y)), name
        else:
            assert np.array_equal(a.image, b.image) and a.keypoints == b.keypoints
