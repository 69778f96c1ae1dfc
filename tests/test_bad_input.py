"""A careless user's inputs: each ends in one `Error:` line (or is skipped and counted), never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kgexplain.cli.main import cli

from kgexplain.store import open_store
from kgexplain.store.sample_graph import sample_graph, small

from .conftest import write_png


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["-q", *args])


def _one_error(res: Result, *words: str) -> None:
    assert res.exit_code != 0, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    assert all(w in errors[0] for w in words), errors[0]


def _annotations(tmp_path: Path, entry: dict) -> Path:  # type: ignore[type-arg]
    write_png(tmp_path / "a.png", (60, 40))
    file = tmp_path / "ann.json"
    file.write_text(json.dumps({"images": [{"path": "a.png", **entry}]}))
    return file


def test_random_bytes_as_weights_are_not_a_checkpoint(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(3000))
    pickle_like = tmp_path / "pickle.pt"
    pickle_like.write_bytes(b"\x80" + os.urandom(500))
    empty_stack = tmp_path / "empty-stack.pt"  # a pickle whose first op pops an empty stack (IndexError)
    empty_stack.write_bytes(b"\x80\x02e.")
    for path in (garbage, pickle_like, empty_stack):
        res = _run("build", "--weights", str(path), "--store", str(tmp_path / "s"))
        _one_error(res, "is not a PyTorch checkpoint")
        assert "weights_only" not in res.output


def test_a_box_outside_its_image_is_named_when_the_annotations_are_read(tmp_path: Path) -> None:
    ann = _annotations(tmp_path, {"box": [100, 10, 140, 30]})  # the image is 60 x 40
    _one_error(_run("data", "check", "--annotations", str(ann)), "images[0] (a.png)", "box", "outside the 60x40 image")
    res = _run("build", "--annotations", str(ann), "--crop", "box", "--store", str(tmp_path / "s"))
    _one_error(res, "box", "outside")


def test_weights_given_twice_to_a_one_model_command_is_an_error_not_the_last_one(tmp_path: Path) -> None:
    res = _run("kp", "--weights", "shipped", "--weights", "none", "--store", str(tmp_path / "s"))
    _one_error(res, "--weights given 2 times", "takes one", "--checkpoints W1,W2")
    _one_error(_run("build", "--weights", "none", "--weights", "none"), "--weights given 2 times")
    assert not (tmp_path / "s").exists()


def test_learning_on_a_build_whose_checkpoint_was_moved_names_the_file(tmp_path: Path) -> None:
    from kgexplain import BuildConfig, LearnConfig, StoreSpec, run_build, run_learn
    from kgexplain.errors import ModelError
    from kgexplain.zoo import shipped_checkpoint

    mine = tmp_path / "mine.pt"
    shutil.copy(shipped_checkpoint(), mine)
    store = StoreSpec(tmp_path / "s")
    config = BuildConfig(weights=str(mine), n=8, iterations=1, patches=0, layers=("conv5_1", "conv5_2"))
    build = run_build(config, store)
    mine.rename(tmp_path / "moved.pt")
    with pytest.raises(ModelError, match=r"was mined with the checkpoint .*mine.pt, which is no longer there"):
        run_learn(LearnConfig(part="head", run=build.run), store)


def test_an_image_named_twice_is_an_error_before_any_work(tmp_path: Path) -> None:
    image = write_png(tmp_path / "a.png", (40, 32))
    store = tmp_path / "s"
    twice = _run("info", str(image), str(tmp_path / "." / "a.png"), "--layers", "conv5_2", "--store", str(store))
    _one_error(twice, "a.png is named twice", "give each image once")
    assert not store.exists()  # it said "Metric: the batch holds duplicate ids" after measuring, with a store made


@pytest.mark.parametrize(
    "command",
    [
        ["info", "{image}", "--layers", "conv5_2"],  # it measured every map first, with the store written
        ["kp", "--n", "4", "--epochs", "1"],  # alike, after fitting
        ["zoo", "train", "--n", "64", "--epochs", "1"],
    ],
)
def test_an_out_folder_that_cannot_be_made_stops_the_job_before_the_store(tmp_path: Path, command: list[str]) -> None:
    image = write_png(tmp_path / "a.png", (40, 32))
    (tmp_path / "afile").write_text("x")
    store = tmp_path / "s"
    args = [a.format(image=image) for a in command] + ["--out", str(tmp_path / "afile" / "out")]
    blocked = _run(*args, *(["--store", str(store)] if command[0] != "zoo" else []))
    _one_error(blocked, "cannot make the folder", "pass --out a writable folder")  # a traceback before
    assert not store.exists()


def test_an_annotations_file_given_as_an_image_points_to_the_option(tmp_path: Path) -> None:
    listing = tmp_path / "annotations.json"
    listing.write_text('{"images": []}')
    store = tmp_path / "s"
    given = _run("localize", "--part", "head", str(listing), "--store", str(store))
    _one_error(given, "annotations.json is a JSON file, not an image", f"--annotations {listing}")
    assert not store.exists()  # it said "cannot use image ...: not a recognised image format"


def test_crop_box_on_images_without_boxes_is_an_error_before_any_store(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "photos" / f"{i}.png", (40, 32), seed=i)
    for command in ("build", "features", "kp", "info"):
        store = tmp_path / f"store-{command}"
        res = _run(command, "--images", str(tmp_path / "photos"), "--crop", "box", "--store", str(store))
        _one_error(res, "--crop box, but no image of folder:", "has an object box")
        assert not store.exists(), command


def test_a_keypoint_outside_its_image_is_named_when_the_examples_are_read(tmp_path: Path) -> None:
    ann = _annotations(tmp_path, {"box": [0, 0, 60, 40], "keypoints": {"head": [80, 10]}})
    res = _run("aog", "learn", "--part", "head", "--examples", str(ann), "--store", str(tmp_path / "s"))
    _one_error(res, "keypoint 'head'", "outside the 60x40 image")


def test_info_over_a_folder_skips_and_counts_a_corrupt_image(tmp_path: Path) -> None:
    for i in range(2):
        write_png(tmp_path / "imgs" / f"{i}.png", (48, 48), seed=i)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not an image")
    args = ["info", "--images", str(tmp_path / "imgs"), "--layers", "conv5_2", "--steps", "4", "--samples", "2"]
    res = CliRunner().invoke(cli, [*args, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    assert "2 of 3 images used; skipped 1: 1 not an image (e.g. bad.png)" in res.stderr
    assert json.loads(res.stdout)[0]["images"] == 2


def test_data_check_fails_when_no_image_is_usable_and_counts_a_dangling_link(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"nope")
    _one_error(_run("data", "check", "--images", str(folder)), "no usable image")
    write_png(folder / "good.png", (40, 40))
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    res = _run("data", "check", "--images", str(folder), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["total"] == 3 and report["loaded"] == 1 and report["skipped"] == {"missing": 1, "not_an_image": 1}


def test_a_data_set_that_cannot_be_written_is_one_error(tmp_path: Path) -> None:
    """A file where a folder should be (in --out, or in the artifacts path of a build's synthetic workload)."""
    (tmp_path / "afile").write_text("x")
    _one_error(_run("data", "synth", "--out", str(tmp_path / "afile" / "sub"), "--n", "2"), "cannot write", "afile")
    _one_error(_run("data", "synth", "--out", str(tmp_path / "afile"), "--n", "2"), "is a file")
    res = _run("build", "--store", str(tmp_path / "s"), "--artifacts", str(tmp_path / "afile" / "a"), "--n", "4")
    _one_error(res, "afile")
    assert not (tmp_path / "s").exists()  # nothing created


def test_patterns_of_an_unknown_layer_or_run_is_an_error(tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as s:
        sample_graph(small()).write(s)
    _one_error(_run("patterns", "--layer", "conv9_9", "--store", str(tmp_path / "s")), "conv9_9", "conv4_1")
    _one_error(_run("patterns", "--run", "nope", "--store", str(tmp_path / "s")), "no run 'nope'")
    assert _run("patterns", "--layer", "conv4_1", "--store", str(tmp_path / "s")).exit_code == 0


def test_a_moved_store_still_finds_the_images_it_generated(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    res = _run("info", "--n", "2", "--layers", "conv5_2", "--steps", "4", "--samples", "2", "--store", str(a),
               "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.exit_code == 0, res.output
    shutil.move(a, b)
    rows = json.loads(_run("query", "MATCH (i:Image) RETURN i.path AS p", "--store", str(b), "--json").stdout)
    assert rows and all(not Path(r["p"]).is_absolute() and (b / "artifacts" / r["p"]).is_file() for r in rows)


def test_information_discarding_raises_no_deprecation_warning_of_torch() -> None:
    code = (
        "import torch, warnings\n"
        "from torch import nn\n"
        "from kgexplain.information import SIDConfig, SIDEstimator\n"
        "from kgexplain.models.registry import ModelHandle\n"
        "h = ModelHandle.from_module(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), {'f': '1'}, "
        "input_size=16)\n"
        "SIDEstimator(h, ['f'], SIDConfig(samples=2)).reference_delta2(torch.randn(1, 3, 16, 16), 1)\n"
    )
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("command", [["store", "check"], ["doctor"]])
def test_check_commands_on_a_store_that_does_not_exist(tmp_path: Path, command: list[str]) -> None:
    res = _run(*command, "--store", str(tmp_path / "none"))
    if command == ["doctor"]:
        assert res.exit_code == 0 and "not created yet" in res.output
    else:
        _one_error(res, "no kgexplain store")


def test_a_job_that_fails_leaves_no_empty_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kp` and `info` make their --out folder first (a folder that cannot be made stops them before the work); one
    that fails later left it empty in the folder it ran in (`kgexplain-kp/`); a folder that was there stays."""
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "unlabelled" / name)
    monkeypatch.chdir(tmp_path)
    store = ["--store", str(tmp_path / "store")]
    _one_error(_run("kp", "--images", "unlabelled", "--layers", "conv5_2", *store), "no image label names")
    _one_error(_run("info", "unlabelled/a.png", "--layers", "conv5_2", "--ru", *store), "no RU decoder")
    assert not (tmp_path / "kgexplain-kp").exists() and not (tmp_path / "kgexplain-info").exists()
    (tmp_path / "mine").mkdir()
    _one_error(_run("kp", "--images", "unlabelled", "--layers", "conv5_2", "--out", "mine", *store), "no image label")
    assert (tmp_path / "mine").is_dir()
