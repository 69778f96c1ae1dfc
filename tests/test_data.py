from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgexplain.data import AnnotatedImages, CubDataset, Framing, ImageFolder, Subset, load_rgb
from kgexplain.data.base import region_affine
from kgexplain.data.folder import ImageFiles
from kgexplain.data.images import BACKDROP, load_mask, load_mask_file, reason_of
from kgexplain.data.spec import DataSpec
from kgexplain.errors import DataError, ImageDecodeError

from .conftest import write_png


def make_bad_folder(root: Path) -> dict[str, str | None]:
    """One image of every troublesome kind; value = the expected skip reason (None = decodes)."""
    write_png(root / "good" / "rgb.png")
    write_png(root / "good" / "gray.png", mode="L")
    write_png(root / "good" / "rgba.png", mode="RGBA")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(root / "good" / "deep16.png")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).convert("P").save(root / "good" / "palette.gif")
    write_png(root / "bad" / "tiny.png", size=(4, 4))
    (root / "bad" / "notes.jpg").write_text("this is not an image")
    full = root / "bad" / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(full, quality=90)
    data = full.read_bytes()
    (root / "bad" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    full.unlink()
    (root / "bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "readme.txt").write_text("ignored: not an image extension")
    return {
        "good/rgb.png": None,
        "good/gray.png": None,
        "good/rgba.png": None,
        "good/deep16.png": None,
        "good/palette.gif": None,
        "bad/tiny.png": "too_small",
        "bad/notes.jpg": "not_an_image",
        "bad/truncated.jpg": "truncated",
        "bad/corrupt.png": None,
    }


def test_every_kind_of_image_decodes_or_skips_with_a_reason(tmp_path: Path) -> None:
    expected = make_bad_folder(tmp_path)
    folder = ImageFolder(tmp_path)
    assert [folder.record(i).id for i in range(len(folder))] == sorted(expected)
    for i in range(len(folder)):
        rid = folder.record(i).id
        try:
            img = folder.load_image(i)
            assert img.mode == "RGB", rid
            assert expected[rid] is None, rid
        except ImageDecodeError as e:
            assert expected[rid] is None or reason_of(e) == expected[rid], (rid, reason_of(e))
            assert rid.startswith("bad/"), rid


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest shows what kgexplain ignores
def test_large_photos_decode_and_only_what_pillow_refuses_is_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow warns above MAX_IMAGE_PIXELS (89 M: a 108 M pixel phone photo) and refuses above twice that."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    write_png(tmp_path / "photo.png", size=(40, 40))  # 1,600 pixels: warned about, used
    write_png(tmp_path / "bomb.png", size=(50, 50))  # 2,500: refused
    assert load_rgb(tmp_path / "photo.png").size == (40, 40)
    with pytest.raises(ImageDecodeError) as refused:
        load_rgb(tmp_path / "bomb.png")
    assert reason_of(refused.value) == "too_large"


def test_rgba_is_composited_over_grey_and_16_bit_is_scaled(tmp_path: Path) -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:10, :, 3] = 255  # top half opaque red, bottom transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img = np.asarray(load_rgb(tmp_path / "a.png"))
    assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[15, 0]) == BACKDROP
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(tmp_path / "w.png")
    assert np.asarray(load_rgb(tmp_path / "w.png")).min() == 255


def _phone_photo(path: Path) -> np.ndarray:
    """A 60 x 40 photo as a phone stores a portrait shot: the pixels turned a quarter, with the EXIF orientation
    (6) that turns them back. Returns the upright pixels (a red patch at the bottom right)."""
    up = np.zeros((40, 60, 3), np.uint8)
    up[30:, 50:] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view"
    Image.fromarray(up).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    return up


def test_a_photo_with_an_exif_orientation_is_read_upright_everywhere(tmp_path: Path) -> None:
    """Pixels, header size, annotations checked against the image, and the report's copy all agree with what a
    viewer (and the annotation tool) shows, not with the sideways grid the camera stored."""
    up = _phone_photo(tmp_path / "portrait.png")
    img = load_rgb(tmp_path / "portrait.png")
    assert img.size == (60, 40) and (np.abs(np.asarray(img).astype(int) - up).max() == 0)
    mask = load_mask(tmp_path / "portrait.png")  # a mask saved by the same camera app is turned alike
    assert mask.shape == (40, 60) and mask[35, 55] and not mask[5, 5]
    given = load_mask_file(tmp_path / "portrait.png", 60)  # `info --mask`: resized to the model's square input
    assert given.shape == (60, 60) and given[52, 55] and not given[5, 5]
    folder = ImageFolder(tmp_path)
    assert folder.image_size(0) == (60, 40)
    doc = {"images": [{"path": "portrait.png", "box": [30, 20, 60, 40], "keypoints": {"head": [55, 35]}}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    ann = AnnotatedImages(tmp_path / "ann.json")  # the point lies off the stored 40 x 60 grid: an error before
    assert ann.image_size(0) == (60, 40) and ann.record(0).keypoints["head"] == (55, 35)
    from kgexplain.web.site import sendable_image  # lazy: the web extra's module, imported where it is tested

    data, suffix = sendable_image(tmp_path / "portrait.png")
    with Image.open(io.BytesIO(data)) as sent:
        assert suffix == ".png" and sent.size == (60, 40) and "exif" not in sent.info  # turned, lossless
        assert np.asarray(sent.convert("RGB"))[35, 55, 0] > 200  # the red patch where the viewer sees it


def test_folder_labels_come_from_sub_folders(tmp_path: Path) -> None:
    write_png(tmp_path / "cats" / "a.png")
    write_png(tmp_path / "dogs" / "b.png")
    write_png(tmp_path / "loose.png")
    write_png(tmp_path / ".hidden" / "c.png")
    folder = ImageFolder(tmp_path)
    assert {folder.record(i).id: folder.record(i).label for i in range(len(folder))} == {
        "cats/a.png": "cats",
        "dogs/b.png": "dogs",
        "loose.png": None,
    }
    fp = folder.fingerprint()
    write_png(tmp_path / "dogs" / "b.png", seed=5, size=(41, 32))
    assert ImageFolder(tmp_path).fingerprint() != fp


def test_fingerprints_travel_with_the_data_not_its_folder(tmp_path: Path) -> None:
    """What a run id hashes of its data: the synthetic set's is the same wherever it is written (its files are
    written anew, at other times); a folder copied with its times keeps its fingerprint; an edited file changes it."""
    import shutil

    from kgexplain.data.synth.dataset import write_synth

    a = write_synth(tmp_path / "a", 6, seed=3, size=48, workers=1)
    b = write_synth(tmp_path / "elsewhere" / "b", 6, seed=3, size=48, workers=1)
    assert a.fingerprint() == b.fingerprint() != write_synth(tmp_path / "c", 6, seed=4, size=48).fingerprint()
    write_png(tmp_path / "mine" / "cats" / "a.png")
    write_png(tmp_path / "mine" / "b.png")
    shutil.copytree(tmp_path / "mine", tmp_path / "copy")  # copy2: times kept, as cp -a
    fp = ImageFolder(tmp_path / "mine").fingerprint()
    assert ImageFolder(tmp_path / "copy").fingerprint() == fp
    write_png(tmp_path / "copy" / "b.png", seed=5, size=(41, 32))
    assert ImageFolder(tmp_path / "copy").fingerprint() != fp
    # Files named one by one: their names and contents, whatever the folder, the path's spelling or the file's time.
    named = ImageFiles([tmp_path / "mine" / "b.png", tmp_path / "mine" / "cats" / "a.png"]).fingerprint()
    shutil.copy(tmp_path / "mine" / "b.png", tmp_path / "b.png")  # a new modification time
    moved = ImageFiles([tmp_path / "b.png", tmp_path / "copy" / "cats" / ".." / "cats" / "a.png"]).fingerprint()
    assert (
        moved == named != ImageFiles([tmp_path / "copy" / "b.png", tmp_path / "mine" / "cats" / "a.png"]).fingerprint()
    )


def test_missing_or_empty_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(tmp_path)


def test_annotations_json_by_hand(tmp_path: Path) -> None:
    write_png(tmp_path / "imgs" / "a.png", size=(100, 80))
    write_png(tmp_path / "masks" / "a.png", size=(100, 80), mode="L")
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "images": [
                    {
                        "path": "imgs/a.png",
                        "label": "bird",
                        "box": [10, 5, 90, 75],
                        "keypoints": {"head": [80, 20], "tail": None},
                        "mask": "masks/a.png",
                    },
                    {"path": "imgs\\a.png", "mask": "masks\\a.png"},  # written on Windows
                ]
            }
        )
    )
    src = AnnotatedImages(tmp_path / "ann.json")
    rec = src.record(0)
    assert rec.label == "bird" and rec.box == (10, 5, 90, 75) and rec.keypoints == {"head": (80.0, 20.0)}
    assert (src.record(1).path, src.record(1).mask_path) == (rec.path, rec.mask_path)
    assert src.load_image(0).size == (100, 80)
    assert src.load_mask(0, (100, 80)).shape == (80, 100)
    # Non-zero is the object, as documented (and as `info --mask` reads it): a mask saved as 0 / 1, as binary masks
    # often are, read as empty with a threshold of 127.
    from PIL import Image

    ones = np.zeros((80, 100), np.uint8)
    ones[20:60, 30:70] = 1
    Image.fromarray(ones).save(tmp_path / "masks" / "a.png")
    assert src.load_mask(0, (100, 80)).sum() == 40 * 40


def test_a_coco_file_is_read_in_cocos_own_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """annotations/person_keypoints_val2017.json beside val2017/: every object an entry (crowds left out), bbox
    [x, y, w, h] as a box, labelled keypoints by their names, two objects of one photo with ids of their own, a
    photo without objects an entry without a box."""
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "val2017" / name, size=(100, 80))
    doc = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}, {"id": 3, "file_name": "c.png"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [10, 20, 30, 40], "keypoints": [15, 25, 2, 0, 0, 0]},
            {"id": 11, "image_id": 2, "category_id": 5, "bbox": [0, 0, 50, 50], "keypoints": [5, 6, 1, 40, 45, 2]},
            {"id": 12, "image_id": 2, "category_id": 5, "bbox": [50, 10, 40, 60], "keypoints": []},
            {"id": 13, "image_id": 2, "category_id": 5, "bbox": [0, 0, 99, 79], "iscrowd": 1},
        ],
        "categories": [{"id": 5, "name": "bird", "keypoints": ["head", "tail"]}],
    }
    file = tmp_path / "annotations" / "person_keypoints_val2017.json"
    file.parent.mkdir()
    file.write_text(json.dumps(doc))
    monkeypatch.chdir(tmp_path)  # the file named relative to the working folder, as on a command line
    src = AnnotatedImages(Path("annotations/person_keypoints_val2017.json"))
    recs = {r.id: r for r in src.records()}
    assert sorted(recs) == ["a.png", "b.png#11", "b.png#12", "c.png"]
    a = recs["a.png"]
    assert a.label == "bird" and a.box == (10.0, 20.0, 40.0, 60.0) and a.keypoints == {"head": (15.0, 25.0)}
    assert recs["b.png#11"].keypoints == {"head": (5.0, 6.0), "tail": (40.0, 45.0)}
    assert recs["b.png#12"].box == (50.0, 10.0, 90.0, 70.0) and recs["b.png#12"].keypoints == {}
    assert recs["c.png"].box is None and a.path == tmp_path / "val2017" / "a.png"
    assert Subset.by_label(src, ["bird"]).fingerprint()  # usable as any annotations source
    doc["annotations"][0]["bbox"] = ["10", 20, 30, 40]  # a string where a number belongs: one error, no traceback
    file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"a\.png: bbox must be \[x, y, width, height\]"):
        AnnotatedImages(file)
    doc["annotations"][0]["bbox"] = [10, 20, 30, 40]
    _phone_photo(tmp_path / "val2017" / "a.png")  # now a portrait phone photo: 40 x 60 stored, 60 x 40 upright
    doc["images"][0] |= {"width": 60, "height": 40}  # annotated upright, as labelme or CVAT show it: fine
    file.write_text(json.dumps(doc))
    assert AnnotatedImages(file).image_size(0) == (60, 40)
    doc["images"][0] |= {"width": 40, "height": 60}  # annotated on the stored pixels: the boxes would be misplaced
    file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"a\.png \(40x60 in the file, 60x40 upright\): annotated on the stored pixels"):
        AnnotatedImages(file)
    (tmp_path / "val2017").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"\(COCO\): none of its 3 images was found") as e:
        AnnotatedImages(file)
    assert "val2017" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"pictures": []}', 'no "images" list'),
        ('{"images": []}', "lists no images"),
        ('{"images": [{"label": "x"}]}', 'has no "path"'),
        ('{"images": [{"path": "a.png", "box": [5, 5, 1, 1]}]}', "box must be"),
        ('{"images": [{"path": "a.png", "keypoints": {"head": [1]}}]}', "keypoint 'head'"),
        ('[{"path": "a.png"}, {"path": "a.png"}]', "listed twice"),
    ],
)
def test_bad_annotations_name_the_problem(tmp_path: Path, doc: str, match: str) -> None:
    (tmp_path / "ann.json").write_text(doc)
    with pytest.raises(DataError, match=match):
        AnnotatedImages(tmp_path / "ann.json")


def make_cub(root: Path) -> Path:
    """A two-class, three-image CUB-200-2011 layout."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images" / "001.Black_footed_Albatross").mkdir(parents=True)
    (root / "images" / "002.Laysan_Albatross").mkdir(parents=True)
    write_png(root / "images" / "001.Black_footed_Albatross" / "a.jpg", size=(200, 100))
    write_png(root / "images" / "001.Black_footed_Albatross" / "b.jpg", size=(200, 100))
    write_png(root / "images" / "002.Laysan_Albatross" / "c.jpg", size=(200, 100))
    (root / "images.txt").write_text(
        "1 001.Black_footed_Albatross/a.jpg\n2 001.Black_footed_Albatross/b.jpg\n3 002.Laysan_Albatross/c.jpg\n"
    )
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    (root / "train_test_split.txt").write_text("1 0\n2 1\n3 0\n")
    # image 2 has a box below 50 px, which the original code drops
    (root / "bounding_boxes.txt").write_text("1 50.0 20.0 100.0 60.0\n2 0 0 40 40\n3 0 0 200 100\n")
    (root / "parts").mkdir()
    (root / "parts" / "parts.txt").write_text("1 back\n6 forehead\n7 left eye\n14 tail\n")
    (root / "parts" / "part_locs.txt").write_text(
        "1 1 100.0 30.0 1\n1 6 140.0 40.0 1\n1 7 0 0 0\n1 14 60.0 70.0 1\n3 1 10 10 1\n"
    )
    return root


def test_cub_layout_crop_and_keypoints(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "CUB_200_2011")
    cub = CubDataset(root)
    assert [cub.record(i).id for i in range(len(cub))] == [
        "001.Black_footed_Albatross/a.jpg",
        "002.Laysan_Albatross/c.jpg",
    ]
    assert cub.dropped_small == 1
    rec = cub.record(0)
    assert rec.box == (50.0, 20.0, 150.0, 80.0)
    assert rec.keypoints["head"] == rec.keypoints["forehead"] == (140.0, 40.0)
    assert "left_eye" not in rec.keypoints  # invisible parts are dropped
    framed = Framing(224, crop="box").apply(cub, 0)
    assert framed.image.shape == (224, 224, 3)
    # The original code maps (x - box_x) / box_w * 224; ours is the same up to the half-pixel convention.
    hx, hy = framed.keypoints["head"]
    assert hx == pytest.approx((140 - 50) / 100 * 224, abs=1.2)
    assert hy == pytest.approx((40 - 20) / 60 * 224, abs=2.0)
    assert CubDataset(root, classes=["Laysan"]).record(0).label == "002.Laysan_Albatross"
    assert len(CubDataset(root, split="test")) == 2
    assert cub.preferred_crop == "box"
    said: list[str] = []
    DataSpec(cub=str(root)).open(progress=lambda e: said.append(e.message or ""))
    assert said == ["CUB: 1 of 3 selected images left out, their object box under 50 px (as the authors' code)"]


def test_a_folder_with_an_annotations_file_says_what_images_takes(tmp_path: Path) -> None:
    """`--images my-birds` on a `data synth` folder takes its masks as images too: one status line says so and
    names the --annotations that uses them as masks; a plain folder says nothing."""
    write_png(tmp_path / "my birds" / "images" / "a.png")
    write_png(tmp_path / "my birds" / "masks" / "a.png", mode="L")
    (tmp_path / "my birds" / "annotations.json").write_text('{"images": [{"path": "images/a.png"}]}')
    said: list[str] = []
    source = DataSpec(images=str(tmp_path / "my birds")).open(progress=lambda e: said.append(e.message or ""))
    assert len(source) == 2 and len(said) == 1
    assert "--images takes every image under it" in said[0]
    assert said[0].endswith(f"--annotations '{tmp_path}/my birds/annotations.json' uses its boxes, parts and masks")
    (tmp_path / "my birds" / "annotations.json").unlink()
    said.clear()
    DataSpec(images=str(tmp_path / "my birds")).open(progress=lambda e: said.append(e.message or ""))
    assert said == []


def test_cub_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a CUB-200-2011 folder: missing images\.txt"):
        CubDataset(tmp_path)
    root = make_cub(tmp_path / "cub")
    with pytest.raises(DataError, match="no CUB class matches 'Penguin'"):
        CubDataset(root, classes=["Penguin"])


def test_framing_maps_points_exactly(tmp_path: Path) -> None:
    """A single bright pixel stays at its mapped keypoint after crop + resize."""
    arr = np.zeros((60, 90, 3), np.uint8)
    arr[30:32, 50:52] = 255  # a 2x2 dot centred at (50.5, 30.5)
    Image.fromarray(arr).save(tmp_path / "dot.png")
    (tmp_path / "a.json").write_text(
        json.dumps({"images": [{"path": "dot.png", "box": [20, 10, 80, 50], "keypoints": {"dot": [50.5, 30.5]}}]})
    )
    src = AnnotatedImages(tmp_path / "a.json")
    framed = Framing(120, crop="box").apply(src, 0)
    x, y = framed.keypoints["dot"]
    img = framed.image[..., 0].astype(float)
    ys, xs = np.nonzero(img > 0)
    w = img[ys, xs]
    assert (np.sum(xs * w) / w.sum(), np.sum(ys * w) / w.sum()) == pytest.approx((x, y), abs=0.3)
    assert framed.box == pytest.approx((0, 0, 120, 120))
    back = framed.affine.inverse_point(x, y)
    assert back == pytest.approx((50.5, 30.5))


def test_region_affine_maps_edges_to_edges() -> None:
    a = region_affine((10, 20, 110, 70), 200, 100)
    assert a.box((10, 20, 110, 70)) == pytest.approx((0, 0, 200, 100))
    assert a.inverse_box((0, 0, 200, 100)) == pytest.approx((10, 20, 110, 70))


def test_subset_by_label(tmp_path: Path) -> None:
    write_png(tmp_path / "cats" / "a.png")
    write_png(tmp_path / "dogs" / "b.png")
    sub = Subset.by_label(ImageFolder(tmp_path), ["dogs"])
    assert len(sub) == 1 and sub.record(0).label == "dogs"
    with pytest.raises(DataError, match="labels present: cats, dogs"):
        Subset.by_label(ImageFolder(tmp_path), ["birds"])


def test_a_data_spec_recorded_reopens_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = DataSpec(images="bg", labels=("leaf",), limit=3)
    record = json.loads(json.dumps(spec.to_record()))  # as a run's config keeps it
    assert record == {"images": str(tmp_path / "bg"), "labels": ["leaf"], "limit": 3}
    assert DataSpec.from_record(record) == DataSpec(images=str(tmp_path / "bg"), labels=("leaf",), limit=3)
    assert DataSpec.from_record(DataSpec(n=10, categories=("background",)).to_record()).categories == ("background",)


def test_two_objects_of_one_photo_are_two_image_nodes_and_one_photo_is_one(tmp_path: Path) -> None:
    """An Image node is an image's content, shared by every run that sees it; two entries of one photo (each object
    cropped to its box) get a node each, so that their frames and inferences do not mix."""
    import hashlib

    from kgexplain.persist.shared import image_rows

    photo = write_png(tmp_path / "photo.png", size=(100, 80))
    entries = [
        {"id": "left", "path": "photo.png", "box": [0, 0, 50, 80]},
        {"id": "right", "path": "photo.png", "box": [50, 0, 100, 80]},
        {"path": "other.png"},
    ]
    write_png(tmp_path / "other.png", size=(60, 40), seed=2)
    (tmp_path / "ann.json").write_text(json.dumps({"images": entries}))
    ids, table = image_rows(AnnotatedImages(tmp_path / "ann.json"), [0, 1, 2], "ann")
    plain = "img:" + hashlib.sha256((tmp_path / "other.png").read_bytes()).hexdigest()[:16]
    assert len(set(ids)) == 3 and ids[2] == plain  # an image seen once keeps its content id
    assert "img:" + hashlib.sha256(photo.read_bytes()).hexdigest()[:16] not in ids[:2]
    assert table.column("path").to_pylist()[:2] == [str(photo)] * 2


def test_a_folders_name_says_what_data_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source is named by its folder, and by the folder above where the name says nothing (`data synth`'s
    `my-birds/images`, a `birds/train` split), also when given as `.`: that name is what run ids show."""
    for sub in ("my-birds/images", "birds/train", "cats"):
        write_png(tmp_path / sub / "a.png")
    assert ImageFolder(tmp_path / "my-birds" / "images").name == "folder:my-birds/images"
    assert ImageFolder(tmp_path / "birds" / "train").name == "folder:birds/train"
    monkeypatch.chdir(tmp_path / "cats")
    assert ImageFolder(Path(".")).name == "folder:cats"


def test_phone_photos_in_heic_are_read_upright(tmp_path: Path) -> None:
    """iPhones save HEIC: a folder of them was "no images found" (the files were not even listed). They are read
    through pillow-heif, upright (libheif applies the rotation; the EXIF tag is reset), in a fresh process too, where
    the opener is registered by the first HEIC file opened."""
    import subprocess
    import sys

    from PIL import Image

    from kgexplain.data.images import register_heif

    register_heif()
    a = np.zeros((60, 100, 3), np.uint8)
    a[:, :50] = 255  # the left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, turned a quarter clockwise to view
    (tmp_path / "phone").mkdir()
    Image.fromarray(a).save(tmp_path / "phone" / "IMG_0001.HEIC", exif=exif.tobytes())
    Image.fromarray(a).save(tmp_path / "phone" / "IMG_0002.heic")
    code = (
        "import sys, numpy as np; from kgexplain.data import ImageFolder;"
        "from kgexplain.data.images import header_size;"
        "f = ImageFolder(sys.argv[1]); ims = [np.asarray(f.load_image(i)) for i in range(len(f))];"
        "print([(r.id, im.shape[:2], int(im[0, -1, 0] > 127), int(im[-1, 0, 0] > 127)) for r, im in "
        "zip(f.records(), ims)], [header_size(p) for p in f.paths])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "phone")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # (top-right, bottom-left) white: upright, 100 high and 60 wide, the stored left half turned clockwise to the
    # top; the untagged one as stored
    assert (
        out.stdout.strip()
        == "[('IMG_0001.HEIC', (100, 60), 1, 0), ('IMG_0002.heic', (60, 100), 0, 1)] [(60, 100), (100, 60)]"
    )


def test_linked_class_folders_are_followed_once_without_looping(tmp_path: Path) -> None:
    """A class folder that is a link (`ln -s /data/cats dataset/cat`, as torchvision's ImageFolder follows) was left
    out without a word; a link back up the tree must not loop, and a folder reached twice is listed once."""
    write_png(tmp_path / "elsewhere" / "cats" / "a.png")
    write_png(tmp_path / "elsewhere" / "cats" / "b.png")
    write_png(tmp_path / "dataset" / "dog" / "c.png")
    (tmp_path / "dataset" / "cat").symlink_to(tmp_path / "elsewhere" / "cats")
    (tmp_path / "dataset" / "dog" / "up").symlink_to(tmp_path / "dataset")  # a loop
    (tmp_path / "dataset" / "kitten").symlink_to(tmp_path / "elsewhere" / "cats")  # the same folder again
    folder = ImageFolder(tmp_path / "dataset")
    assert [(r.id, r.label) for r in folder.records()] == [
        ("cat/a.png", "cat"),
        ("cat/b.png", "cat"),
        ("dog/c.png", "dog"),
    ]
