"""The report (a static site) and the browser (the same pages served live): links, JSON twins, paging, errors, and
a real headless chromium walking the pages."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from kgexplain.cli.main import cli
from PIL import Image
from starlette.testclient import TestClient

from kgexplain.errors import UsageError
from kgexplain.store import GraphStore, StoreSpec, open_store
from kgexplain.store.base import RunRecord
from kgexplain.store.sample_graph import Shape, sample_graph
from kgexplain.web.render import NO_PAGE, render
from kgexplain.web.report import write_report
from kgexplain.web.serve import make_app
from kgexplain.web.site import href, site_path, slug, unslug

from .conftest import gone_pid

SHAPE = Shape((("conv4_1", 6, 3), ("conv4_2", 6, 3), ("conv5_1", 4, 2)), parents=3, top=4, images=6)


def _png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A small explanatory-graph run with real patch files, source images, and one SID map on an image."""
    path = tmp_path / "store"
    sg = sample_graph(SHAPE)
    with open_store(path) as s:
        patch = s.artifacts.put_bytes(_png((200, 60, 40)), "png", "patches")
        fires = sg.rels["FIRES_ON"]
        sg.rels["FIRES_ON"] = fires.append_column("patch", pa.array([patch.path] * len(fires)))
        for i in range(SHAPE.images):
            target = s.artifacts.root / f"images/{i:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_png((30 * i, 120, 200), 224))
        sg.write(s)
        image_id = sg.shared_nodes["Image"].column("id")[0].as_py()
        sid = s.artifacts.put_bytes(_npy(np.linspace(-3, -2, 64).reshape(8, 8)), "npy", "maps")
        metric = {"id": [f"{sg.run.id}/m0"], "run": [sg.run.id], "kind": ["sid"], "name": ["sid"], "value": [-2.5],
                  "layer": ["conv4_1"], "image": [image_id], "artifact": [sid.path]}  # fmt: skip
        s.ensure_nodes("Metric", pa.table(metric))
        _aog_run(s, sg.run, sg.nodes["Pattern"].column("id").to_pylist()[:3])
    return path


AOG_RUN = "aog-bird-head-test"
HOSTILE = '<script>alert("x")</script>.png'  # an example image's name: pages must show it as text
CALIBRATION = {"threshold": 0.2, "precision": 0.95, "positives": 50, "negatives": 40, "found_rate": 0.84,
               "false_rate": 0.05, "localisation": {"images": 50, "distance": 0.0412, "found": 42,
                                                    "distance_found": 0.0351}}  # fmt: skip


def _aog_run(s: GraphStore, build: RunRecord, patterns: list[str]) -> None:
    """A learnt part on the sample build: one template using three of its patterns, calibrated."""
    pid = f"{build.id}/part/bird/head"
    nodes = {
        "Part": [{"id": pid, "run": AOG_RUN, "name": "head", "category": "bird", "box_w": 30.0, "box_h": 20.0}],
        "Template": [{"id": f"{pid}/t0", "run": AOG_RUN, "part": pid, "k": 0, "example": HOSTILE, "flipped": False}],
    }
    uses = [
        {"from": f"{pid}/t0", "to": p, "dx": 4.0 * i, "dy": -2.0, "weight": 1.0 / (i + 1)}
        for i, p in enumerate(patterns)
    ]
    rels = {"HAS_TEMPLATE": [{"from": pid, "to": f"{pid}/t0"}], "USES": uses}
    config = {"build": build.id, "part": "head", "category": "bird", "calibration": CALIBRATION}
    s.write_run(
        RunRecord(AOG_RUN, "aog", build.model, "examples", config, {}),
        {k: pa.Table.from_pylist(v) for k, v in nodes.items()},
        {k: pa.Table.from_pylist(v) for k, v in rels.items()},
    )


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _run_id(store: Path) -> str:
    """The sample build's run id."""
    with StoreSpec(str(store)).read() as db:
        return str(db.query("MATCH (r:Run) WHERE r.kind = 'eg' RETURN r.id").rows[0][0])


def test_slugs_round_trip_and_page_paths_parse() -> None:
    for node_id in ("run-1/conv4_1/f3/p0", "img:abc", "odd~id%2F?#x"):
        assert unslug(slug(node_id)) == node_id and "/" not in slug(node_id) and ":" not in slug(node_id)
        assert site_path(href("patterns", node_id, 2)) == ("patterns", node_id, 2, "html")
    assert site_path(href("runs", "r", ext="json")) == ("runs", "r", 0, "json")


def test_report_is_self_contained_every_link_resolves(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    with StoreSpec(str(store_dir)).read() as db:
        res = write_report(db, out, max_patterns=10)
    assert (out / "index.html").is_file() and res.pages > 10 and res.assets >= SHAPE.images + 1
    pages = list(out.rglob("*.html"))
    assert len(pages) == res.pages
    for page in pages:
        html = page.read_text()
        assert not re.search(r"""(src|href)=["'](https?:)?//""", html), f"{page} refers to the network"
        assert "<script" not in html, f"{page} holds a script (the pages have none; names are escaped)"
        for ref in re.findall(r"""(?:src|href)=["']([^"'#?]+)""", html):
            assert (page.parent / ref).resolve().is_file(), f"{page.relative_to(out)} links to missing {ref}"
        twin = json.loads(page.with_suffix(".json").read_text())
        assert twin["page"] in ("index", "run", "pattern", "image", "paths", "metrics")
    # A pattern beyond --max-patterns shows as plain text that says why when pointed at.
    assert not any("<a>" in p.read_text() for p in pages)
    assert any(f'<a title="{NO_PAGE}">' in p.read_text() for p in pages)
    run = _run_id(store_dir)
    run_page = json.loads((out / href("runs", run, ext="json")).read_text())
    assert [lay["layer"] for lay in run_page["layers"]] == ["conv4_1", "conv4_2", "conv5_1"]  # the model's order
    image_pages = list((out / "images").glob("*.html"))
    assert any("colourbar" in p.read_text() for p in image_pages)  # the SID map with its colour scale
    maps = [m for p in image_pages for m in json.loads(p.with_suffix(".json").read_text())["maps"]]
    assert maps and all(m["run_href"] == href("runs", m["run"]) for m in maps)  # each figure links its run's page


def test_a_report_that_cannot_be_written_is_one_error_and_leaves_nothing(store_dir: Path, tmp_path: Path) -> None:
    """An --out that cannot be made (here: below a file) was a FileNotFoundError traceback from mkdtemp."""
    (tmp_path / "afile").write_text("x")
    with (
        StoreSpec(str(store_dir)).read() as db,
        pytest.raises(UsageError, match=r"cannot write the report to .*afile/site"),
    ):
        write_report(db, tmp_path / "afile" / "site", max_patterns=2)
    assert (tmp_path / "afile").read_text() == "x" and not list(tmp_path.rglob(".site.*"))


def test_a_report_removes_what_a_killed_report_left_and_nothing_else(store_dir: Path, tmp_path: Path) -> None:
    """A report is written into a hidden folder beside --out and renamed; one that `kill -9` left there (the
    process is gone) is removed by the next report to that --out. Another live process's, another machine's, and
    another --out's are kept."""
    import os

    gone, host = gone_pid(), socket.gethostname()
    left = {
        "killed": tmp_path / f".site.{host}.{gone}.ab12.staging",
        "live": tmp_path / f".site.{host}.{os.getppid()}.cd34.staging",
        "elsewhere": tmp_path / f".site.other-host.{gone}.ef56.staging",
        "other out": tmp_path / f".site2.{host}.{gone}.gh78.staging",
    }
    for folder in left.values():
        (folder / "patterns").mkdir(parents=True)
        (folder / "patterns" / "p.html").write_text("half-written")
    with StoreSpec(str(store_dir)).read() as db:
        write_report(db, tmp_path / "site", max_patterns=2)
    assert (tmp_path / "site" / "index.html").is_file()
    assert {name for name, folder in left.items() if folder.exists()} == {"live", "elsewhere", "other out"}
    assert not [p for p in tmp_path.glob(".site.*") if p not in left.values()]  # its own folder became site/


def test_report_reduces_large_source_images_and_copies_small_ones(store_dir: Path, tmp_path: Path) -> None:
    """A report of large photos stays one that can be sent, and a served page of them loads: a source image over
    1,024 px on its long side is copied (served) reduced to that (a JPEG), a smaller one byte for byte."""
    big = store_dir / "artifacts" / "images" / "000000.png"
    Image.new("RGB", (3000, 2000), (90, 140, 60)).save(big)
    out = tmp_path / "site"
    with StoreSpec(str(store_dir)).read() as db:
        write_report(db, out, max_patterns=10)
    urls, ids = {}, {}
    for twin in (out / "images").glob("*.json"):
        page = json.loads(twin.read_text())
        urls[Path(page["path"]).name] = out / page["url"]
        ids[Path(page["path"]).name] = page["image"]
    with Image.open(urls["000000.png"]) as im:
        assert im.format == "JPEG" and im.size == (1024, 683)
    small = store_dir / "artifacts" / "images" / "000001.png"
    assert urls["000001.png"].read_bytes() == small.read_bytes()
    with StoreSpec(str(store_dir)).read() as db, TestClient(make_app(db)) as client:
        served = client.get(f"/source/{slug(ids['000000.png'])}")
        assert served.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(served.content)) as im:
            assert im.size == (1024, 683)
        assert client.get(f"/source/{slug(ids['000001.png'])}").content == small.read_bytes()


def test_report_image_pages_group_by_layer_and_no_link_leads_past_what_it_wrote(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file cannot take ``?layer=``: the report's layer filters were links back to the same page, and its image
    pages offered a "next" page it never wrote. A report's image page shows each layer's strongest patterns under
    the layer's heading, its layer links jump there, and it says the server has the rest."""
    monkeypatch.setattr("kgexplain.web.site.IMAGE_PAGE", 2)
    out = tmp_path / "site"
    with StoreSpec(str(store_dir)).read() as db:
        write_report(db, out, max_patterns=10)
    assert not list((out / "images").glob("*.p2.*"))
    first = sorted((out / "images").glob("*.json"))[0]
    page = json.loads(first.read_text())
    layers = [lay["layer"] for lay in page["layers"]]
    assert len(layers) > 1 and page["pager"]["next"] is None and page["per_layer"] == 12
    assert [f["layer"] for f in page["fires"]] == sorted(f["layer"] for f in page["fires"])  # grouped
    html = first.with_suffix(".html").read_text()
    assert "?layer=" not in html and "filters by layer and pages through them all" in html
    for name in layers:
        assert f'href="#layer-{name}"' in html and f'<h3 id="layer-{name}">' in html
    for html_page in (out / "images").glob("*.html"):  # every link of the image pages resolves
        for ref in re.findall(r"""(?:src|href)=["']([^"'#?]+)""", html_page.read_text()):
            assert (html_page.parent / ref).resolve().is_file(), f"{html_page.name} links to missing {ref}"


def test_report_refuses_a_foreign_folder_and_an_unknown_run_and_writes_nothing(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    res = CliRunner().invoke(cli, ["-q", "report", "--store", str(store_dir), "--out", str(foreign)])
    assert res.exit_code != 0 and "not a kgexplain report" in res.output
    assert (foreign / "thesis.tex").read_text() == "precious"
    res = CliRunner().invoke(cli, ["-q", "report", "--store", str(store_dir), "--out", str(tmp_path / "o"),
                                   "--run", "nope"])  # fmt: skip
    assert res.exit_code != 0 and "no run 'nope'" in res.output and not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".*staging"))
    res = CliRunner().invoke(cli, ["-q", "report", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    # `--out .` in an empty folder: the report would replace the folder one stands in ("Device or resource busy",
    # with an empty staging folder left beside it)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    res = CliRunner().invoke(cli, ["-q", "report", "--store", str(store_dir), "--out", "."])
    assert res.exit_code == 2 and "is the folder you are in" in res.output
    assert not list(tmp_path.glob(".*staging")) and not list((tmp_path / "here").iterdir())


def test_server_pages_json_twins_paging_and_errors(store_dir: Path) -> None:
    run = _run_id(store_dir)
    with StoreSpec(str(store_dir)).read() as db, TestClient(make_app(db)) as client:
        index = client.get("/index.json").json()
        assert sorted(r["run"] for r in index["runs"]) == sorted([run, AOG_RUN])
        assert client.get("/").status_code == 200 and "kgexplain" in client.get("/").text
        page = client.get("/" + href("runs", run, ext="json")).json()
        first = page["layers"][0]["top"][0]
        assert page["layers"][0]["patterns"] == 18
        p = client.get("/" + first["href"])
        assert p.status_code == 200 and "<svg" in p.text and first["pattern"] in p.text
        assert 'id="edges"' in p.text and 'id="no-edges"' not in p.text
        twin = client.get("/" + first["href"].replace(".html", ".json")).json()
        lone = render(twin | {"parents": [], "children": [], "graph_svg": ""}, first["href"], db.url)
        assert 'id="no-edges"' in lone and 'id="edges"' not in lone  # no edge: said, not an empty drawing and table
        twin = client.get("/" + first["href"].replace(".html", ".json")).json()
        assert twin["pattern"] == first["pattern"] and len(twin["images"]) == SHAPE.top
        patch = client.get("/" + twin["images"][0]["patch_url"])
        assert patch.status_code == 200 and patch.headers["content-type"] == "image/png"
        src = client.get("/" + twin["images"][0]["url"])
        assert src.status_code == 200 and Image.open(io.BytesIO(src.content)).size == (224, 224)
        image = client.get("/" + twin["images"][0]["href"].replace(".html", ".json")).json()
        assert {f["pattern"] for f in image["fires"]} >= {first["pattern"]}
        one_layer = client.get("/" + twin["images"][0]["href"].replace(".html", ".json") + "?layer=conv5_1").json()
        assert {f["layer"] for f in one_layer["fires"]} <= {"conv5_1"}
        assert client.get("/" + href("runs", run) + "?page=2").status_code == 200
        assert client.get("/" + href("runs", run) + "?page=x").status_code == 404
        missing = client.get("/patterns/nope.json")
        assert missing.status_code == 404 and "no pattern" in missing.json()["error"]
        assert client.get("/files/../../etc/passwd").status_code == 404
        assert {r["run"] for r in client.get("/runs.json").json()["runs"]} == {run, AOG_RUN}
        part = client.get("/" + href("runs", AOG_RUN, ext="json")).json()
        assert part["calibration"]["localisation"] == CALIBRATION["localisation"]
        assert [u["pattern"] for u in part["templates"][0]["uses"]][:1] and part["part"]["category"] == "bird"
        text = client.get("/" + href("runs", AOG_RUN)).text
        assert "0.041 of the image diagonal" in text and "over 50 held-out images that annotate it" in text
        assert "<script>" not in text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;.png" in text  # escaped
        # Read-only: no route takes a write (every one answers GET and HEAD only).
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in (
                "/",
                "/" + href("runs", run),
                "/" + href("runs", run, ext="json"),
                "/files/x",
                "/static/style.css",
            ):
                assert client.request(method, path).status_code == 405


def test_a_runs_figures_are_tables_by_layer_and_by_name() -> None:
    from kgexplain.web.site import metric_tables

    def m(kind: str, name: str, value: float, layer: str | None = None, artifact: str | None = None) -> dict:
        return {"kind": kind, "name": name, "value": value, "layer": layer, "checkpoint": "final", "artifact": artifact}

    metrics = [
        m("kp_layer", "kp", 10, "conv3"),
        m("kp_layer", "reliable", 4, "conv3"),
        m("kp_layer", "kp", 12, "conv5"),
        m("kp_sample", "corr", -0.9),
        m("kp_sample", "kl", 0.1),
        m("info_map", "sid", -2.5, "conv5", "x.npy"),
    ]
    by_layer, by_name = metric_tables(metrics)  # the figure with a file stays in the plain list only
    assert by_layer == {
        "kind": "kp_layer",
        "columns": ["checkpoint", "layer", "kp", "reliable"],
        "rows": [{"head": ["final", "conv3"], "cells": [10, 4]}, {"head": ["final", "conv5"], "cells": [12, None]}],
    }
    assert by_name["columns"] == ["name", "final"] and [r["cells"] for r in by_name["rows"]] == [[-0.9], [0.1]]
    page = render({"page": "run", "title": "t", "run": "r", "kind": "kp", "model": "m", "status": "complete",
                   "config": {}, "stats": {"x": 0.123456789}, "layers": [], "metrics": metrics,
                   "metric_tables": [by_layer, by_name], "images": [], "templates": [],
                   "pager": {"pages": 1}}, "runs/r.html", "store")  # fmt: skip
    assert "<th>reliable</th>" in page and "0.123457" in page and "0.123456789" not in page


def test_serve_on_a_port_in_use_is_one_error_line_and_port_0_picks_a_free_one(store_dir: Path) -> None:
    from kgexplain.cli.web_cmd import listen

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = CliRunner().invoke(cli, ["serve", "--store", str(store_dir), "--port", str(port)])
    assert res.exit_code == 2 and "serving" not in res.output, res.output
    assert res.output.strip().splitlines() == [
        f"Error: cannot serve on 127.0.0.1:{port}: Address already in use (pass another --port (0 picks a free "
        "one), or a --host address of this machine)"
    ]
    with listen("127.0.0.1", 0) as sock:
        assert sock.getsockname()[1] > 0


def test_serve_on_every_address_says_who_can_read_it(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--host 0.0.0.0 serves the store to anyone who can reach the machine, without a login: said in a note."""
    import uvicorn

    served: list[object] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets))
    note = "note: --host 0.0.0.0 lets anyone who can reach this machine read the store's pages and images"
    wide = CliRunner().invoke(cli, ["serve", "--store", str(store_dir), "--host", "0.0.0.0", "--port", "0"])
    local = CliRunner().invoke(cli, ["serve", "--store", str(store_dir), "--port", "0"])
    assert wide.exit_code == local.exit_code == 0 and len(served) == 2
    assert note in wide.stderr and "note:" not in local.stderr and "serving" in local.stdout
    for sockets in served:
        for sock in sockets or []:  # type: ignore[attr-defined]
            sock.close()


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_headless_chromium_walks_index_run_pattern_image_part_served_and_reported(
    store_dir: Path, tmp_path: Path
) -> None:
    """In `serve` and in a `report` opened from the file system: index -> run -> pattern -> image, and the part's
    page; on every page no JavaScript console error, no broken image, and the page loaded in under 2 s."""
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    browser, driver_path = _chromium()  # type: ignore[misc]
    site = tmp_path / "site"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with StoreSpec(str(store_dir)).read() as db:
        write_report(db, site, max_patterns=10)
        server = uvicorn.Server(uvicorn.Config(make_app(db), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tempfile.mkdtemp()}"):  # fmt: skip
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        web = webdriver.Chrome(service=Service(driver_path), options=opts)

        def check(page: str) -> None:
            """The page shown is ``page``, it loaded in under 2 s, every image decoded, the console has no error."""
            assert web.find_element(By.CSS_SELECTOR, "main").get_attribute("data-page") == page
            took = web.execute_script(
                "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime"
            )
            assert 0 <= took < 2000, f"{web.current_url} took {took} ms"
            broken = web.execute_async_script(  # lazy images are made eager, then every image must decode
                "const done = arguments[0]; const imgs = Array.from(document.images);"
                "imgs.forEach(i => { i.loading = 'eager'; });"
                "Promise.all(imgs.map(i => i.decode().then(() => null, () => i.src)))"
                ".then(r => done(r.filter(x => x)));"
            )
            assert not broken, f"{web.current_url}: broken images {broken}"
            errors = [e for e in web.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, f"{web.current_url}: console errors {errors}"

        try:
            for root in (f"http://127.0.0.1:{port}/", (site / "index.html").as_uri()):
                web.get(root)
                check("index")
                web.find_element(By.CSS_SELECTOR, f"#runs a[href*='{_run_id(store_dir)}']").click()
                check("run")
                web.find_element(By.CSS_SELECTOR, ".card a").click()
                check("pattern")
                loaded = web.execute_script("return document.images.length")
                assert loaded >= 2  # patches and the source images with the inferred position
                assert web.find_elements(By.CSS_SELECTOR, "svg.offsets line")  # arrows to parents
                web.find_element(By.CSS_SELECTOR, ".figure-card a").click()
                check("image")
                assert web.execute_script("return document.querySelector('img.big').naturalWidth") == 224
                web.get(root)
                web.find_element(By.CSS_SELECTOR, f"#runs a[href*='{AOG_RUN}']").click()
                check("run")
                text = web.find_element(By.CSS_SELECTOR, "main").text
                assert "Part" in text and "0.041 of the image diagonal" in text  # the held-out results
                if root.startswith("file:"):  # a pattern the report has no page for reads as text, not as a link
                    colours = web.execute_script(
                        "const a = document.querySelector('main a:not([href])');"
                        "return a && [getComputedStyle(a).color, getComputedStyle(a.closest('td')).color]"
                    )
                    assert colours and colours[0] == colours[1], colours
                web.find_element(By.CSS_SELECTOR, "table a[href*='patterns']").click()  # a pattern the template uses
                check("pattern")
        finally:
            web.quit()
            server.should_exit = True
            thread.join(timeout=10)


def test_figures_page_draws_knowledge_points_through_training(store_dir: Path) -> None:
    from kgexplain.persist.shared import metric_rows

    with open_store(store_dir) as s:
        layers = s.query("MATCH (l:Layer) RETURN l.id AS id, l.name AS name ORDER BY l.idx").records()[:2]
        metrics = [
            {"id": f"kp/{c}/{lay['name']}", "kind": "kp_layer", "name": "kp", "value": v + 10 * j,
             "layer": lay["name"], "checkpoint": c, "layer_id": lay["id"]}
            for v, c in enumerate(("epoch10", "epoch2", "epoch4")) for j, lay in enumerate(layers)
        ]  # fmt: skip
        nodes, rels = metric_rows("kp-run", metrics)
        s.ensure_nodes("Metric", nodes["Metric"])
        s.ensure_rels("MEASURES", rels["MEASURES"])
    with StoreSpec(str(store_dir)).read() as db, TestClient(make_app(db)) as client:
        page = client.get("/metrics.json").json()
        [chart] = page["training"]
        assert chart["name"] == "kp" and chart["checkpoints"] == ["epoch2", "epoch4", "epoch10"]  # natural order
        assert {line["layer"] for line in chart["lines"]} == {lay["name"] for lay in layers}
        html_page = client.get("/metrics.html").text
        assert "through training" in html_page and html_page.count("<polyline") >= 2 + len(layers)


def test_the_server_follows_what_other_processes_write(store_dir: Path) -> None:
    """A connection reads the embedded store as it was when opened; `serve` opens it again once it changed."""
    import subprocess
    import sys

    spec = StoreSpec(str(store_dir))
    with spec.read() as db, TestClient(make_app(db, reopen=spec.read)) as client:
        runs = [r["run"] for r in client.get("/index.json").json()["runs"]]
        delete = [sys.executable, "-m", "kgexplain", "runs", "delete", runs[0], "--with-dependents"]
        done = subprocess.run([*delete, "--store", str(store_dir)], check=True, capture_output=True, text=True)
        deleted = [line.removeprefix("deleted run ") for line in done.stdout.splitlines()]
        assert runs[0] in deleted and [r["run"] for r in client.get("/index.json").json()["runs"]] == [
            r for r in runs if r not in deleted
        ]
        assert client.get("/" + href("runs", runs[0], ext="json")).status_code == 404


def test_image_page_marks_recorded_localisations(store_dir: Path) -> None:
    from kgexplain.persist.shared import metric_rows

    with open_store(store_dir) as s:
        image_id = s.query("MATCH (i:Image) RETURN i.id ORDER BY i.id").rows[0][0]
        extra = {"found": True, "x": 40.5, "y": 12.0, "flipped": True, "template": 1, "score": 0.3}
        nodes, _rels = metric_rows("localize-r", [{"id": "head/0", "kind": "localization", "name": "head",
                                                  "value": 0.93, "image": image_id, "image_id": image_id,
                                                  "extra": extra}])  # fmt: skip
        s.ensure_nodes("Metric", nodes["Metric"])
    with StoreSpec(str(store_dir)).read() as db, TestClient(make_app(db)) as client:
        twin = client.get("/" + href("images", image_id, ext="json")).json()
        assert twin["localizations"][0] | {"run_href": None} == {
            "run": "localize-r", "run_href": None, "part": "head", "confidence": 0.93, "found": True, "x": 40.5,
            "y": 12.0, "box": None, "flipped": True, "template": 1, "score": 0.3,
        }  # fmt: skip
        assert all(m["kind"] != "localization" for m in twin["maps"])  # not an information map
        page = client.get("/" + href("images", image_id)).text
        assert '<circle cx="40.5" cy="12.0"' in page and "mirrored" in page and 'id="localizations"' in page


def test_images_in_formats_browsers_do_not_show_are_sent_as_png(tmp_path: Path) -> None:
    """A TIFF data set's report showed broken images (and blank tiles cut from them): browsers do not show TIFF,
    PPM, HEIC or CMYK JPEG. Those are sent as the image kgexplain reads (a PNG, a JPEG for a JPEG); what browsers
    show is sent byte for byte."""
    from kgexplain.data.images import load_rgb, register_heif
    from kgexplain.web.site import sendable_image

    register_heif()  # pillow-heif's writer too (reading registers it by itself)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8))
    rgb.save(tmp_path / "a.tiff")
    rgb.save(tmp_path / "a.ppm")
    rgb.save(tmp_path / "a.heic")
    rgb.save(tmp_path / "a.webp")
    Image.fromarray((rng.random((30, 40)) * 65535).astype(np.uint16)).save(tmp_path / "b16.tiff")
    rgb.convert("CMYK").save(tmp_path / "c.jpg")
    for name, kind in [
        ("a.tiff", ".png"),
        ("a.ppm", ".png"),
        ("a.heic", ".png"),
        ("b16.tiff", ".png"),
        ("c.jpg", ".jpg"),
    ]:
        data, ext = sendable_image(tmp_path / name)
        assert ext == kind, name
        with Image.open(io.BytesIO(data)) as sent:
            assert sent.mode == "RGB" and sent.size == (40, 30), name
            if kind == ".png":  # lossless: the very pixels kgexplain reads
                assert np.array_equal(np.asarray(sent), np.asarray(load_rgb(tmp_path / name))), name
    assert sendable_image(tmp_path / "a.webp") == ((tmp_path / "a.webp").read_bytes(), ".webp")


def test_the_index_headline_gives_each_kind_its_main_figures() -> None:
    """A build's stability ratio (a dict in its stats) and a part graph's or localisation's figures were left out:
    their index rows showed no figure at all."""
    from kgexplain.web.site import headline

    build = {"patterns": 5056, "edges": 56640, "images": 120, "stability": {"ratio": 0.5612, "patterns": 0.04}}
    assert headline("eg", build) == "patterns 5056, edges 56640, images 120, stability ratio 0.561"
    assert headline("aog", {"templates": 6, "uses": 1800}) == "templates 6, uses 1800"
    assert headline("localize", {"images": 6, "found": 5, "localisations": 6}) == "images 6, localisations 6, found 5"
    assert headline("eg", {"stability": {"ratio": float("nan")}}) == ""
