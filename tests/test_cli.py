from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import kgexplain.cli.build_cmd as build_cmd
import pytest
import torch
from click.testing import CliRunner
from kgexplain.cli.main import COMMANDS, SUMMARIES, cli
from starlette.testclient import TestClient

from kgexplain.jobs.common import data_label
from kgexplain.store import StoreSpec, queries
from kgexplain.web.serve import make_app
from kgexplain.web.site import href

from .conftest import write_png


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    ctx = click.Context(group)  # the top level loads its commands on demand: ask it, not its .commands
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None and cmd.name == name, name
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=lambda p: " ".join(p))
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert "Usage:" in result.output
    cmd = dict(_commands(cli))[path]
    assert cmd.help or cmd.short_help, path


def test_version_and_help() -> None:
    import kgexplain

    assert kgexplain.__version__ in run("--version").output
    assert "build" in run("--help").output


def test_models_and_layers() -> None:
    assert "vgg16" in run("models").output
    rows = json.loads(run("layers", "toynet", "--json").stdout)
    conv4 = next(r for r in rows if r["layer"] == "conv4_2")
    assert (conv4["stride"], conv4["centre"], conv4["map"], conv4["default"]) == (8, 3.5, "16x16", True)
    csv = run("layers", "toynet", "--csv").stdout.splitlines()
    assert csv[0].startswith("layer,module,channels")


def test_doctor_reports_torch_and_the_shipped_weights() -> None:
    rows = json.loads(run("doctor", "--json").stdout)
    checks = {r["check"]: r for r in rows}
    assert checks["torch"]["status"] == "ok"
    assert checks["toynet weights"]["status"] == "ok"
    assert "not cached" in checks["imagenet weights"]["detail"]
    assert checks["image formats"]["status"] == "ok" and ".heic .heif" in checks["image formats"]["detail"]


def test_data_synth_writes_a_data_set(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = json.loads(
        run("-q", "data", "synth", "--out", str(out), "--n", "14", "--seed", "3", "--size", "64", "--json").stdout
    )
    assert result["images"] == 14 and (out / "annotations.json").exists()
    check = json.loads(run("-q", "data", "check", "--annotations", str(out / "annotations.json"), "--json").stdout)
    assert check["loaded"] == 14 and check["skipped"] == {}


def test_zoo_eval_json() -> None:
    result = json.loads(run("zoo", "eval", "--seed", "77", "--n", "70", "--json").stdout)
    assert result["accuracy"] >= 0.9 and result["n"] == 70


BUILD = ["--n", "8", "--iterations", "3", "--patches", "2"]


def test_build_reference_workload_end_to_end(tmp_path: Path) -> None:
    import datetime as dt

    store = tmp_path / "store"
    before = dt.datetime.now(dt.UTC)
    first = json.loads(run("-q", "build", *BUILD, "--store", str(store), "--json").stdout)
    [listed] = json.loads(run("runs", "--store", str(store), "--json").stdout)
    started, finished = (dt.datetime.fromisoformat(listed[k]) for k in ("started", "finished"))
    # `started` is when the build began, not when its store write did (the stages before it take seconds)
    assert started - before < dt.timedelta(seconds=1) and finished - started >= dt.timedelta(
        seconds=int(sum(v for k, v in first["timings"].items() if k != "store_s"))
    )
    assert first["model"] == "toynet" and first["images"]["loaded"] == 8 and first["negatives"]["loaded"] == 8
    assert set(first["layers"]) == {"conv4_1", "conv4_2", "conv5_1", "conv5_2"}
    assert first["layers"]["conv5_2"]["shape"] == [128, 8, 8] and first["layers"]["conv5_2"]["patterns"] == 1280
    assert first["mined"] and first["patterns"] == 96 * 13 * 2 + 128 * 10 * 2
    assert first["stored"]["patterns"] == first["patterns"] and first["stored"]["parents"] == first["edges"]
    st = first["stability"]
    # 8 images and 3 iterations: the figures are computed and stored, not meaningful (tests/test_stability_slow.py
    # checks the quality on the reference workload)
    assert st["patterns"] > 0 and st["random"] > 0 and st["raw_filter"] > 0
    assert set(st["per_layer"]) == set(first["layers"])
    for info in first["layers"].values():
        assert (store / "artifacts" / info["contact_sheet"]).is_file()
    stats = json.loads(run("stats", "--store", str(store), "--json").stdout)["counts"]

    again = json.loads(run("-q", "build", *BUILD, "--store", str(store), "--json").stdout)
    assert not again["mined"] and again["run"] == first["run"]  # the graph came from the run's cache
    assert json.loads(run("stats", "--store", str(store), "--json").stdout)["counts"]["Pattern"] == stats["Pattern"]
    top = json.loads(run("patterns", "--top", "1", "--store", str(store), "--json").stdout)[0]
    shown = json.loads(run("show", top["pattern"], "--store", str(store), "--json").stdout)
    assert shown["images"] and (store / "artifacts" / shown["images"][0]["patch"]).is_file()
    assert len(shown["parents"]) == 10 or top["layer"] == "conv5_2"
    # The browser marks a pattern's positions (framed pixels) on the source images, through the boxes it was cropped to.
    with StoreSpec(str(store)).read() as db, TestClient(make_app(db)) as client:
        page = client.get("/" + href("patterns", top["pattern"], ext="json")).json()
        row = queries.run(db, first["run"])
        assert row is not None
        frames = json.loads((store / "artifacts" / json.loads(row["stats"])["frames"]).read_text())
    assert len(frames) == 8  # every image was cropped to its object box
    for im in page["images"]:
        x0, y0, x1, y1 = frames[im["image"]]
        assert im["sx"] == pytest.approx(x0 + (im["x"] + 0.5) * (x1 - x0) / 128 - 0.5)
        assert x0 - 0.5 <= im["sx"] <= x1 and y0 - 0.5 <= im["sy"] <= y1
        assert im["left"] == pytest.approx(100 * (im["sx"] + 0.5) / im["w"])


def test_build_on_an_image_folder_with_bad_images(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "imgs" / f"{i}.png", size=(70, 60), seed=i)
    (tmp_path / "imgs" / "bad.jpg").write_text("nope")
    out = run(
        "-q",
        "build",
        "--images",
        str(tmp_path / "imgs"),
        "--layers",
        "conv4_2,conv5_2",
        "--iterations",
        "2",
        "--patches",
        "1",
        "--store",
        str(tmp_path / "s"),
        "--json",
    ).stdout
    result = json.loads(out)
    assert result["images"] == {"total": 4, "loaded": 3, "skipped": {"not_an_image": 1}}
    assert result["stability"] == {}  # no keypoints: no metric
    assert set(result["layers"]) == {"conv4_2", "conv5_2"}


@pytest.mark.parametrize(
    ("source", "label"),
    [
        ("annotations:my-birds/annotations.json", "my-birds"),  # `data synth`'s file: its folder names the run
        ("annotations:annotations/person_keypoints_val2017.json[bird]", "person_keypoints_val2017[bird]"),
        ("folder:my photos", "my photos"),
        ("folder:photos[:50]", "photos[:50]"),
        ("folder:my-birds/images", "my-birds"),  # `data synth`'s and `data photos`' image folder: its parent's name
        ("folder:/data/birds/train[bird]", "birds-train[bird]"),
        ("folder:images", "images"),  # nothing above it in the name given
        ("files", "files"),
    ],
)
def test_a_builds_run_id_names_its_data(source: str, label: str) -> None:
    assert data_label(source) == label


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "--images", "/nonexistent/dir"], "image folder not found: /nonexistent/dir"),
        (["build", "--layers", "conv9_9", "--n", "2"], "unknown layer 'conv9_9' for toynet; valid layers:"),
        (["build", "--model", "vgg16", "--n", "2"], "ImageNet weights for vgg16 are not in the torch cache"),
        (["build", "--weights", "/no/such.pt", "--n", "2"], "checkpoint not found: /no/such.pt"),
        (["build", "--device", "cuda:7", "--n", "2"], "cuda:7"),
        (["build", "--images", "x", "--cub", "y"], "choose one data source"),
        (["zoo", "eval", "--weights", "/no/such.pt"], "checkpoint not found"),
        (["data", "synth", "--out", "{tmp}/x", "--category", "unicorn"], "Invalid value for '--category'"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(
        cli, ["--quiet", *args, "--store", str(tmp_path / "s")] if args[0] == "build" else ["--quiet", *args]
    )
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1


def test_missing_negatives_fail_before_the_store_is_created(tmp_path: Path) -> None:
    for i in range(2):
        write_png(tmp_path / "imgs" / f"{i}.png", size=(40, 40), seed=i)
    store = tmp_path / "s"
    args = [
        "-q",
        "build",
        "--images",
        str(tmp_path / "imgs"),
        "--negatives",
        str(tmp_path / "nope"),
        "--store",
        str(store),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "negatives: image folder not found" in result.output
    assert "--negatives" in result.output and not (store / "graph.lbdb").exists()


def test_a_bad_layer_fails_before_any_data_is_generated(tmp_path: Path) -> None:
    store = tmp_path / "s"
    result = CliRunner().invoke(cli, ["-q", "build", "--layers", "conv6_1", "--store", str(store)])
    assert result.exit_code == 1 and "unknown layer 'conv6_1'" in result.output
    assert not (store / "artifacts" / "data").exists()


READ_WITHOUT_TORCH = """
import sys
from kgexplain.cli.main import cli
store = sys.argv[1]
for args in (["store", "init"], ["stats"], ["runs"], ["query", "MATCH (p:Pattern) RETURN count(p) AS n"], ["patterns"]):
    code = cli.main([*args, "--store", store], standalone_mode=False)
    assert not code, (args, code)
assert "torch" not in sys.modules, "a read command loaded torch"
print("ok")
"""


HELP_WITHOUT_TORCH = """
import sys
from kgexplain.cli.main import cli
code = cli.main(["--help"], standalone_mode=False)
assert "torch" not in sys.modules, "listing the commands loaded torch"
"""


def test_help_lists_every_command_with_its_own_summary_and_loads_no_command() -> None:
    assert sorted(SUMMARIES) == sorted(COMMANDS)
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and SUMMARIES[name] == command.get_short_help_str(limit=10_000), name
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert "  localize  Find PART on new images (files or a folder):" in listed
    res = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "Commands:" in res.stdout and "serve" in res.stdout, res.stderr


def test_the_read_commands_start_without_torch(tmp_path: Path) -> None:
    # Each command's module loads when it runs: querying a store costs no torch import (about 1.5 s here).
    res = subprocess.run(
        [sys.executable, "-c", READ_WITHOUT_TORCH, str(tmp_path / "s")], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr


def test_a_gpu_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def oom(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(build_cmd, "run_build", oom)
    res = run("build", "--store", str(tmp_path / "s"), ok=False)
    assert res.exit_code == 1 and "the GPU ran out of memory" in res.output and "Traceback" not in res.output


def test_ctrl_c_says_what_the_command_leaves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Exit 130 and one line that is true for the command: a build keeps its cache, a report writes nothing."""
    import kgexplain.cli.web_cmd as web_cmd

    from kgexplain.store import open_store
    from kgexplain.store.sample_graph import sample_graph, small

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(build_cmd, "run_build", interrupt)
    monkeypatch.setattr(web_cmd, "write_report", interrupt)
    build = CliRunner().invoke(cli, ["-q", "build", "--store", str(tmp_path / "s")])
    assert build.exit_code == 130 and "Error: interrupted; the extracted features" in build.output
    with open_store(tmp_path / "s") as store:
        sample_graph(small()).write(store)
    report = CliRunner().invoke(cli, ["-q", "report", "--out", str(tmp_path / "r"), "--store", str(tmp_path / "s")])
    assert report.exit_code == 130 and "Error: interrupted; no report was written" in report.output


def test_an_annotations_file_named_from_its_own_folder_names_the_run_after_that_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--annotations annotations.json` in the data's folder: the run id names the folder, as it does for
    `--annotations my-birds/annotations.json` (it was `eg-toynet-x-...`: the relative path has no parent)."""
    from kgexplain.data import AnnotatedImages

    folder = tmp_path / "my-birds"
    write_png(folder / "a.png", (64, 64), seed=0)
    (folder / "annotations.json").write_text(json.dumps({"images": [{"path": "a.png"}]}))
    monkeypatch.chdir(folder)
    assert data_label(AnnotatedImages("annotations.json").name) == "my-birds"
