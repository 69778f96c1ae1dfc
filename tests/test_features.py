from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from kgexplain.data import Framing, ImageFolder
from kgexplain.data.synth import SynthSource
from kgexplain.features import extract_features, normalise
from kgexplain.features.extract import features_of
from kgexplain.models import ModelHandle, load_model

from .conftest import gone_pid, write_png


@pytest.fixture(scope="module")
def toynet():
    return load_model("toynet", "none")


def _direct(handle, source, index: int, module: str) -> torch.Tensor:
    framed = Framing(handle.input_size).apply(source, index, with_mask=False)
    x = normalise(torch.from_numpy(framed.image.copy())[None], handle)
    out = {}

    def keep(_m: torch.nn.Module, _i: object, o: torch.Tensor) -> None:  # returns None: output not replaced
        out["o"] = o.clone()

    h = dict(handle.module.named_modules())[module].register_forward_hook(keep)
    try:
        with torch.no_grad():
            handle.module(x)
    finally:
        h.remove()
    return out["o"][0]


def test_features_match_a_direct_forward_pass(toynet, tmp_path: Path) -> None:
    src = SynthSource(10, seed=3, size=128)
    res = extract_features(toynet, src, ["conv4_2", "conv5_1"], batch_size=4, cache_dir=tmp_path, device="cpu")
    fs = res["conv4_2"]
    assert len(fs) == 10 and fs.shape == (96, 16, 16)
    assert fs.geometry.stride_x == 8 and fs.geometry.map_h == 16
    direct = _direct(toynet, src, 7, toynet.layer("conv4_2").module)
    got = fs.get([7])[0]
    assert torch.allclose(got, direct, atol=2e-3 * direct.abs().max().item())
    assert (got < 0).any()  # pre-ReLU by default
    post = extract_features(toynet, src, ["conv4_2"], relu="post", cache_dir=tmp_path, device="cpu")["conv4_2"]
    assert torch.allclose(post.get([7])[0], torch.relu(got), atol=1e-3)


def test_cache_hit_computes_nothing_and_memory_equals_disk(toynet, tmp_path: Path) -> None:
    src = SynthSource(9, seed=1, size=128)
    first = extract_features(toynet, src, ["conv5_2"], cache_dir=tmp_path, device="cpu", batch_size=4)
    assert first.images_computed == 9 and not first.from_cache["conv5_2"]
    second = extract_features(toynet, src, ["conv5_2"], cache_dir=tmp_path, device="cpu")
    assert second.images_computed == 0 and second.from_cache["conv5_2"]
    memory = extract_features(toynet, src, ["conv5_2"], device="cpu")
    assert memory["conv5_2"].directory is None
    # Batch sizes differ (4 vs 32), so the convs may round differently in the last bit of float32.
    a, b = second["conv5_2"].tensor(), memory["conv5_2"].tensor()
    assert torch.allclose(a, b, rtol=2e-3, atol=1e-3 * b.abs().max().item())
    # A different data set, layer set or model gives a different entry.
    other = extract_features(toynet, SynthSource(9, seed=2, size=128), ["conv5_2"], cache_dir=tmp_path, device="cpu")
    assert other["conv5_2"].directory != first["conv5_2"].directory


def test_interrupted_extraction_resumes_after_the_complete_shards(toynet, tmp_path: Path) -> None:
    src = SynthSource(12, seed=5, size=128)
    full = extract_features(toynet, src, ["conv4_1"], cache_dir=tmp_path, device="cpu", batch_size=2, shard_images=4)
    d = full["conv4_1"].directory
    assert d is not None and len(list(d.glob("shard-*.npy"))) == 3
    reference = full["conv4_1"].tensor()
    # Simulate a crash after the first shard: no manifest, later shards gone, the second one's temporary file
    # left half-written by the killed process (gone), beside one of a live process and one of another machine.
    (d / "manifest.json").unlink()
    for k in (1, 2):
        (d / f"shard-{k:06d}.npy").unlink()
        (d / f"shard-{k:06d}.json").unlink()
    gone, host = gone_pid(), socket.gethostname()
    left = {
        "killed": d / f".shard-000001.npy.{host}.{gone}.tmp",
        "live": d / f".shard-000001.npy.{host}.{os.getppid()}.tmp",
        "elsewhere": d / f".shard-000001.npy.other-host.{gone}.tmp",
    }
    for f in left.values():
        f.write_bytes(b"half")
    resumed = extract_features(toynet, src, ["conv4_1"], cache_dir=tmp_path, device="cpu", batch_size=2, shard_images=4)
    assert resumed.images_computed == 8
    assert torch.equal(resumed["conv4_1"].tensor(), reference)
    assert {name for name, f in left.items() if f.exists()} == {"live", "elsewhere"}


def test_streamed_chunks_cover_every_image_in_order(toynet, tmp_path: Path) -> None:
    src = SynthSource(11, seed=6, size=128)
    fs = extract_features(toynet, src, ["conv5_1"], cache_dir=tmp_path, device="cpu", shard_images=4)["conv5_1"]
    seen = []
    for positions, chunk in fs.chunks(3):
        assert chunk.dtype == torch.float32 and chunk.shape[1:] == fs.shape
        seen.extend(range(positions.start, positions.stop))
        assert torch.equal(chunk, fs.get(list(range(positions.start, positions.stop))))
    assert seen == list(range(11))
    assert list(fs.indices) == list(range(11))


def test_bad_images_are_skipped_and_counted(tmp_path: Path, tiny_net) -> None:
    for i in range(3):
        write_png(tmp_path / "imgs" / f"ok{i}.png", size=(50, 40), seed=i)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"garbage")
    write_png(tmp_path / "imgs" / "tiny.png", size=(3, 3))
    handle = ModelHandle.from_module(tiny_net, {"c2": "block2.0"}, input_size=32)
    res = extract_features(
        handle, ImageFolder(tmp_path / "imgs"), ["c2"], cache_dir=tmp_path / "cache", device="cpu", batch_size=2
    )
    assert res.report.total == 5 and res.report.loaded == 3
    assert res.report.skipped == {"not_an_image": 1, "too_small": 1}
    assert res["c2"].ids == ["ok0.png", "ok1.png", "ok2.png"]
    assert list(res["c2"].indices) == [1, 2, 3]
    again = extract_features(handle, ImageFolder(tmp_path / "imgs"), ["c2"], cache_dir=tmp_path / "cache", device="cpu")
    assert again.report.skipped == res.report.skipped and again.images_computed == 0


def test_shards_are_float16_on_disk(toynet, tmp_path: Path) -> None:
    fs = extract_features(toynet, SynthSource(3, size=128), ["conv5_2"], cache_dir=tmp_path, device="cpu")["conv5_2"]
    arr = np.load(next(fs.directory.glob("shard-*.npy")))
    assert arr.dtype == np.float16 and arr.shape == (3, 128, 8, 8)


@pytest.mark.parametrize("gain", [1e-9, 1e7])
def test_maps_of_any_scale_survive_the_float16_cache(tmp_path: Path, tiny_net, gain: float) -> None:
    """A network whose maps are tiny (MobileNet-V2 with random weights: |x| about 5e-9 at features.17) or huge
    kept float16's zeros or infinities in the cache; they are stored scaled by a power of two and read back."""
    conv = tiny_net.block2[0]
    with torch.no_grad():
        conv.weight.mul_(gain)
        conv.bias.mul_(gain)
    for i in range(5):
        write_png(tmp_path / "imgs" / f"im{i}.png", size=(40, 40), seed=i)
    handle = ModelHandle.from_module(tiny_net, {"c2": "block2.0"}, input_size=32)
    src = ImageFolder(tmp_path / "imgs")
    cached = extract_features(handle, src, ["c2"], cache_dir=tmp_path / "cache", device="cpu", batch_size=2)["c2"]
    again = extract_features(handle, src, ["c2"], cache_dir=tmp_path / "cache", device="cpu")
    assert again.images_computed == 0
    framed = np.stack([Framing(32).apply(src, i, with_mask=False).image for i in range(5)])
    memory = features_of(handle, framed, ["c2"], device="cpu")["c2"]
    direct = _direct(handle, src, 3, "block2.0")
    for fs in (cached, again["c2"], memory):
        got = fs.get([3])[0]
        assert torch.isfinite(got).all()
        assert torch.allclose(got, direct, rtol=2e-3, atol=1e-3 * direct.abs().max().item())
        assert torch.equal(torch.cat([c for _, c in fs.chunks(2)]), fs.tensor())
    assert {s.scale for s in cached.shards} != {1.0}  # the scale is not hiding in a no-op


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision_matches_the_cpu(toynet) -> None:
    src = SynthSource(16, seed=8, size=128)
    cpu = extract_features(toynet, src, ["conv5_2"], device="cpu")["conv5_2"].tensor()
    gpu = extract_features(toynet, src, ["conv5_2"], device="cuda", amp=True)["conv5_2"].tensor()
    toynet.to("cpu")
    assert torch.allclose(gpu, cpu, rtol=2e-2, atol=2e-2 * cpu.abs().max().item())
