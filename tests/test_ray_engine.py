"""The Ray Data embedding engine (clipcleaner_core/ray_engine.py) against the local engine.

One local Ray (2 CPUs, no dashboard) serves the whole module: its start-up costs several seconds on 2 cores.
The model is the tiny random-weight open_clip config of conftest.py (it exercises the real loading code in
every Ray actor; it is not CLIP).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # long: run by CI and `pytest`, skipped by `pytest -m "not slow"`

ray = pytest.importorskip("ray")

from clipcleaner_core import cli  # noqa: E402
from clipcleaner_core.pipeline import EncoderConfig, scan  # noqa: E402
from clipcleaner_core.ray_engine import (  # noqa: E402
    RayUnavailable,
    _decode_batch,
    _EncodeActor,
    _probe,
    encoder_spec,
    plan_resources,
)
from clipcleaner_core.workspace import Workspace  # noqa: E402

N_GOOD = 40


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def small_set(demo_dir: Path, tmp_path_factory) -> Path:
    """40 demo images + one corrupt file, as a labels.csv with relative paths."""
    d = tmp_path_factory.mktemp("ray_small")
    df = pd.read_csv(demo_dir / "labels.csv").iloc[:N_GOOD].copy()
    (d / "images").mkdir()
    for p in df["path"]:
        shutil.copy(demo_dir / p, d / p)
    (d / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    df = pd.concat([df, pd.DataFrame({"path": ["images/corrupt.png"], "label": [df["label"].iloc[0]]})])
    df.to_csv(d / "labels.csv", index=False)
    shutil.copy(demo_dir / "classes.txt", d / "classes.txt")
    return d


def test_ray_engine_matches_local_engine(local_ray, tiny_clip, small_set, tmp_path, capsys):
    enc = EncoderConfig(encoder="clip", model=tiny_clip["model"], checkpoint=tiny_clip["checkpoint"],
                        model_config=tiny_clip["config"], device="cpu", batch_size=16, num_workers=0)
    local = scan(small_set / "labels.csv", tmp_path / "ws_local", classes_file=str(small_set / "classes.txt"),
                 encoder=enc)

    rc = cli.main(["scan", str(small_set / "labels.csv"), "-w", str(tmp_path / "ws_ray"),
                   "--classes", str(small_set / "classes.txt"), "--encoder", "clip",
                   "--model", tiny_clip["model"], "--checkpoint", tiny_clip["checkpoint"],
                   "--model-config", tiny_clip["config"], "--device", "cpu", "--batch-size", "16",
                   "--engine", "ray", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 sample(s) could not be used" in out and "corrupt.png: cannot decode image" in out

    wl, wr = Workspace(tmp_path / "ws_local"), Workspace(tmp_path / "ws_ray")
    sl = json.loads(wl.settings_path.read_text())["settings"]
    sr = json.loads(wr.settings_path.read_text())["settings"]
    assert sl["embedding_engine"] == "local" and sr["embedding_engine"] == "ray"
    assert sr["embedding_key"] == sl["embedding_key"] and sr["encoder"] == sl["encoder"]

    # the same embeddings (float16 on disk; batches may differ between engines → float tolerance)
    el = np.asarray(wl.embeddings(), dtype=np.float32)
    er = np.asarray(wr.embeddings(), dtype=np.float32)
    assert el.shape == er.shape == (N_GOOD, 32)
    np.testing.assert_allclose(er, el, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(er, axis=1), 1.0, atol=2e-3)

    # the corrupt file is reported exactly like the local engine does, and left out
    dl, dr = wl.dataset(), wr.dataset()
    pd.testing.assert_frame_equal(dl[["sample_id", "status", "reason"]], dr[["sample_id", "status", "reason"]])
    bad = dr[dr["status"] != "ok"]
    assert list(bad["path"]) == ["images/corrupt.png"]
    assert "cannot decode image" in bad["reason"].iloc[0]
    assert list(local.problems["path"]) == ["images/corrupt.png"]

    # the same scores downstream (both workspaces scored the same features)
    rl, rr = wl.scores(), wr.scores()
    assert list(rl["sample_id"]) == list(rr["sample_id"])
    assert (rl["flagged"] == rr["flagged"]).mean() >= 0.95

    # the chunk cache is the local engine's format: a local re-scan of the Ray workspace reuses it
    again = scan(small_set / "labels.csv", wr, classes_file=str(small_set / "classes.txt"), encoder=enc)
    assert again.settings.embedding_key == sr["embedding_key"]
    np.testing.assert_array_equal(np.asarray(wr.embeddings(), dtype=np.float32), er)


def test_plan_resources_gpu_and_cpu_clusters():
    gpu = plan_resources({"CPU": 32.0, "GPU": 4.0}, [16, 16])
    assert gpu["concurrency"] == 4 and gpu["num_gpus"] == 1 and gpu["decode_tasks"] != gpu["concurrency"]
    two = plan_resources({"CPU": 2.0}, [2])
    assert two == {"concurrency": 1, "num_gpus": 0, "num_cpus": 1, "threads": 1, "decode_tasks": 2}
    big = plan_resources({"CPU": 64.0}, [16, 16, 16, 16])
    assert big["concurrency"] == 8 and big["num_cpus"] <= 16 and big["num_gpus"] == 0
    assert plan_resources({"CPU": 8.0}, [8], actors=3)["concurrency"] == 3


def test_actor_rebuilds_the_drivers_encoder_or_refuses(tiny_clip, small_set):
    """The encode actor's own model equals the driver's; a different checkpoint is refused (no Ray needed)."""
    import torch

    from clipcleaner_core.encoders import make_encoder

    driver = make_encoder("clip", model=tiny_clip["model"], checkpoint=tiny_clip["checkpoint"],
                          model_config=tiny_clip["config"], device="cpu")
    spec = encoder_spec(driver, kind="clip", model=tiny_clip["model"], checkpoint=tiny_clip["checkpoint"],
                        model_config=tiny_clip["config"], device="cpu")
    paths = np.array([str(small_set / "images" / "corrupt.png"),
                      *[str(p) for p in sorted((small_set / "images").glob("0*.png"))[:3]]], dtype=object)
    dec = _decode_batch({"idx": np.arange(4), "path": paths}, driver.transform)
    assert dec["ok"].tolist() == [False, True, True, True] and "cannot decode image" in dec["reason"][0]
    out = _EncodeActor(spec)(dec)
    want = driver.encode_images(torch.from_numpy(dec["x"]))
    np.testing.assert_allclose(out["feats"], want, atol=1e-6)

    other = dict(spec, identity={**spec["identity"], "size": spec["identity"]["size"] + 1})
    with pytest.raises(RuntimeError, match="different encoder than the driver"):
        _EncodeActor(other)


def test_unreachable_cluster_fails_fast_with_a_message():
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    for addr in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(RayUnavailable, match="cannot reach the Ray cluster"):
            _probe(addr)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(RayUnavailable, match="expected HOST:PORT"):
        _probe("no-port-here")
    assert issubclass(RayUnavailable, ValueError)  # the CLI reports it as a one-line error (exit 2)


@pytest.mark.slow
def test_ray_engine_reads_shards_with_ray_data(local_ray, demo_dir, tmp_path, monkeypatch):
    """WebDataset and Parquet shards on --engine ray: read with ray.data.read_webdataset / read_parquet (a damaged
    tar shard member by member), the same embeddings and the same reported problems as the local engine."""
    import _shards

    wds = tmp_path / "wds"
    _shards.write_webdataset(demo_dir, wds)
    hub = tmp_path / "hub"
    _shards.write_hf_parquet(demo_dir, hub)
    calls: dict[str, list] = {}

    def spy(name: str):
        real = getattr(ray.data, name)

        def read(paths, *a, **k):
            calls.setdefault(name, []).append(paths)
            return real(paths, *a, **k)
        return read

    for name in ("read_webdataset", "read_parquet", "from_items"):
        monkeypatch.setattr(ray.data, name, spy(name))
    pixels = EncoderConfig(encoder="pixels", batch_size=16, num_workers=0)
    for src, classes in ((wds, str(demo_dir / "classes.txt")), (hub, None)):
        local = scan(src, tmp_path / f"{src.name}_local", classes_file=classes, encoder=pixels)
        rc = cli.main(["scan", str(src), "-w", str(tmp_path / f"{src.name}_ray"), "--encoder", "pixels",
                       "--batch-size", "16", "--engine", "ray", "-q", *(["--classes", classes] if classes else [])])
        assert rc == 0
        wr = Workspace(tmp_path / f"{src.name}_ray")
        np.testing.assert_array_equal(np.asarray(wr.embeddings(), dtype=np.float32),
                                      np.asarray(local.workspace.embeddings(), dtype=np.float32))
        cols = ["sample_id", "path", "status", "reason"]
        pd.testing.assert_frame_equal(wr.dataset()[cols], local.workspace.dataset()[cols])
        assert (wr.dataset()["status"] != "ok").sum() >= 3
    assert [sorted(Path(p).name for p in c) for c in calls["read_webdataset"]] == [["shard-00000.tar",
                                                                                   "shard-00001.tar"]]
    assert [sorted(Path(p).name for p in c) for c in calls["read_parquet"]] == [
        ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]]
    # only the truncated shard's three good samples were read one by one
    assert [[Path(i["path"].split("#")[0]).name for i in c] for c in calls["from_items"]] == [["shard-00002.tar"] * 3]
