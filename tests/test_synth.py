from __future__ import annotations

import json

import numpy as np
import pytest

from kgexplain.data import AnnotatedImages
from kgexplain.data.synth import ANIMALS, BACKGROUND, CATEGORIES, KEYPOINTS, SynthSource, render, write_synth
from kgexplain.errors import DataError


def test_there_are_at_least_five_animal_categories_and_a_background() -> None:
    assert len(ANIMALS) >= 5
    assert BACKGROUND in CATEGORIES
    assert {"head", "back", "tail"} <= set(KEYPOINTS)


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_rendering_is_a_pure_function_of_seed_and_index(seed: int) -> None:
    a = render(seed, 5, "fox", 96)
    b = render(seed, 5, "fox", 96)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert a.keypoints == b.keypoints and a.box == b.box
    c = render(seed, 6, "fox", 96)
    assert not np.array_equal(a.image, c.image)
    d = render(seed + 1, 5, "fox", 96)
    assert not np.array_equal(a.image, d.image)


def test_image_does_not_depend_on_the_size_of_the_data_set() -> None:
    small, large = SynthSource(10, seed=3, size=64), SynthSource(50, seed=3, size=64)
    assert np.array_equal(np.asarray(small.load_image(8)), np.asarray(large.load_image(8)))


@pytest.mark.parametrize("size", [224, 128])
@pytest.mark.parametrize("category", ANIMALS)
def test_keypoints_lie_inside_mask_and_box(category: str, size: int) -> None:
    for index in range(12):
        s = render(11, index, category, size)
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (size, size) and s.mask.any()
        assert s.box is not None
        x0, y0, x1, y1 = s.box
        rows, cols = np.nonzero(s.mask)
        assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert set(s.keypoints) == set(KEYPOINTS)
        for name, (x, y) in s.keypoints.items():
            assert x0 - 0.5 <= x <= x1 - 0.5 and y0 - 0.5 <= y <= y1 - 0.5, (category, index, name)
            assert s.mask[round(y), round(x)], (category, index, name, x, y)


def test_object_is_fully_inside_the_image_and_poses_vary() -> None:
    flips, rotations, scales = set(), [], []
    for index in range(40):
        s = render(2, index, ANIMALS[index % len(ANIMALS)], 128)
        assert s.box is not None
        assert s.box[0] >= 1 and s.box[1] >= 1 and s.box[2] <= 127 and s.box[3] <= 127
        flips.add(s.pose["flip"])
        rotations.append(s.pose["rotation_deg"])
        scales.append(s.pose["scale"])
    assert flips == {-1.0, 1.0}
    assert np.ptp(rotations) > 20 and np.ptp(scales) > 0.2 * np.mean(scales)


def test_background_images_have_no_object() -> None:
    s = render(0, 3, BACKGROUND, 64)
    assert not s.mask.any() and s.box is None and s.keypoints == {}
    assert s.image.std() > 5  # cluttered, not blank


def test_source_is_balanced_over_categories() -> None:
    src = SynthSource(70, seed=1, size=48)
    labels = [src.record(i).label for i in range(len(src))]
    assert {labels.count(c) for c in CATEGORIES} == {10}
    assert src.fingerprint() != SynthSource(70, seed=2, size=48).fingerprint()


def test_write_synth_writes_images_masks_and_annotations(tmp_path) -> None:
    out = tmp_path / "synth"
    src = write_synth(out, 14, seed=4, size=64, workers=2)
    assert isinstance(src, AnnotatedImages) and len(src) == 14
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["synth"]["seed"] == 4 and len(doc["images"]) == 14
    fox = next(e for e in doc["images"] if e["label"] == "fox")
    assert (out / fox["path"]).exists() and (out / fox["mask"]).exists()
    # The written PNG is exactly the rendered image (lossless) and the annotation matches the render.
    i = fox["index"]
    s = render(4, i, "fox", 64)
    assert np.array_equal(np.asarray(src.load_image(i)), s.image)
    assert src.record(i).keypoints["head"] == pytest.approx(s.keypoints["head"], abs=1e-3)
    assert np.array_equal(src.load_mask(i, (64, 64)), s.mask)
    bg = next(e for e in doc["images"] if e["label"] == BACKGROUND)
    assert "mask" not in bg and "keypoints" not in bg


def test_write_synth_reuses_and_refuses_to_clobber(tmp_path) -> None:
    out = tmp_path / "synth"
    write_synth(out, 7, seed=1, size=48, workers=1)
    stamp = (out / "annotations.json").stat().st_mtime_ns
    write_synth(out, 7, seed=1, size=48, workers=1)  # same parameters: reused as is
    assert (out / "annotations.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="different data set"):
        write_synth(out, 7, seed=2, size=48, workers=1)
    write_synth(out, 7, seed=2, size=48, workers=1, overwrite=True)
    assert json.loads((out / "annotations.json").read_text())["synth"]["seed"] == 2


def test_bad_generator_arguments_are_clear_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="unknown synthetic categories: unicorn"):
        SynthSource(5, categories=["unicorn"])
    with pytest.raises(DataError, match="at least one image"):
        SynthSource(0)
