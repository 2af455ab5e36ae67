"""Formats of large datasets, read locally: WebDataset tar shards and Hugging Face-style Parquet shards with
embedded images (clipcleaner_core/shards.py, the image locator of clipcleaner_core/images.py).

The shards are built here from digits demo images (tests/_shards.py). A scan of shards must give the same
embeddings and scores as a scan of the same image files listed in a table, report every broken member or row
with its shard, key and reason without stopping, and the samples must work everywhere a file path did:
thumbnails, the app's detail view, the CSV and ImageFolder exports. The Ray path is in test_ray_engine.py.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import _shards
import numpy as np
import pandas as pd
import pytest
from _app_helpers import grid, grid_ids, grid_send
from PIL import Image

from clipcleaner_core import images, shards, thumbnails
from clipcleaner_core.config import EncoderConfig
from clipcleaner_core.dataset import DatasetError, load_dataset, make_sample_id
from clipcleaner_core.export import export_csv, export_imagefolder
from clipcleaner_core.pipeline import scan
from clipcleaner_core.workspace import Workspace

PIXELS = EncoderConfig(encoder="pixels", batch_size=16, num_workers=0)


@pytest.fixture(scope="module")
def wds(demo_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("wds")
    info = _shards.write_webdataset(demo_dir, d / "shards")
    return d, info


@pytest.fixture(scope="module")
def hf(demo_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    info = _shards.write_hf_parquet(demo_dir, d / "hub")
    return d, info


def _reference(good: list[tuple], demo_dir: Path, tmp: Path):
    """The good images of the shards (the same files, in scan order) scanned from a path,label table."""
    csv = _shards.write_reference_csv(good, tmp / "ref.csv")
    return scan(csv, tmp / "ws", root=str(demo_dir), classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)


def _check_against_reference(ws: Workspace, good: list[tuple], bad: dict, ref_ws: Workspace) -> None:
    s = ws.scores()
    assert list(s["path"]) == [p for p, _, _ in good]
    assert list(s["sample_id"]) == [make_sample_id(p) for p, _, _ in good]
    assert list(s["label"]) == [lab for *_, lab in good]
    # the bytes inside the shards are the files' bytes: the same embeddings and scores as the table scan
    emb = np.asarray(ws.embeddings(), dtype=np.float32)
    ref = np.asarray(ref_ws.embeddings(), dtype=np.float32)
    np.testing.assert_array_equal(emb, ref)
    ds = ws.dataset()
    problems = ds[ds["status"] != "ok"].set_index("path")["reason"]
    assert set(problems.index) == set(bad)
    for path, phrase in bad.items():
        assert problems[path].startswith(f"{path}: ") and phrase in problems[path], (path, problems[path])


def test_webdataset_scan_reports_broken_members_and_matches_the_files(wds, demo_dir, tmp_path):
    d, info = wds
    r = scan(d / "shards", tmp_path / "ws", classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    assert r.settings.data.kind == "webdataset"
    reference = _reference(info["good"], demo_dir, tmp_path / "ref")
    _check_against_reference(r.workspace, info["good"], info["bad"], reference.workspace)
    pd.testing.assert_series_equal(r.scores["flagged"], reference.scores["flagged"])
    np.testing.assert_allclose(r.scores["noise_score"], reference.scores["noise_score"], atol=1e-6)
    abs_paths = r.scores.set_index("path")["abs_path"]
    assert abs_paths["shard-00000.tar/000003"] == images.tar_locator(d / "shards" / "shard-00000.tar", "000003.png")
    # a shard given as a file, a glob and a WebDataset brace range read the same samples
    one = load_dataset(d / "shards" / "shard-00000.tar", classes_file=str(demo_dir / "classes.txt"))
    assert list(one.ok["path"]) == [p for p, _, _ in info["good"][:20]]
    pattern = load_dataset(str(d / "shards" / "shard-0000[01].tar"), classes_file=str(demo_dir / "classes.txt"))
    braces = load_dataset(str(d / "shards" / "shard-{00000..00001}.tar"), classes_file=str(demo_dir / "classes.txt"))
    assert list(pattern.samples["sample_id"]) == list(braces.samples["sample_id"])
    assert list(pattern.ok["path"]) == [p for p, _, _ in info["good"][:40]] + ["shard-00001.tar/bad-bytes"]
    with pytest.raises(DatasetError, match="no .tar or .parquet shard matches"):
        load_dataset(str(d / "shards" / "nothing-*.tar"))
    # a truth file names shard samples by their dataset paths (shard/key): evaluation works on shards too
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"path": r.scores["path"], "label": r.scores["label"]}).iloc[:30].to_csv(truth, index=False)
    from clipcleaner_core.evaluate import evaluate_workspace

    ev = evaluate_workspace(r.workspace, truth)
    assert ev["samples"] == 30 and ev["mislabelled"] == 0 and ev["unmatched"] == len(r.scores) - 30


def test_hf_parquet_scan_names_classes_from_metadata_and_matches_the_files(hf, demo_dir, tmp_path):
    d, info = hf
    r = scan(d / "hub", tmp_path / "ws", encoder=PIXELS)  # hub layout: the shards sit in data/
    assert r.settings.data.kind == "parquet"
    assert list(r.settings.classes) == info["classes"]  # the ClassLabel names, in their order
    reference = _reference(info["good"], demo_dir, tmp_path / "ref")
    _check_against_reference(r.workspace, info["good"], info["bad"], reference.workspace)
    pd.testing.assert_series_equal(r.scores["flagged"], reference.scores["flagged"])
    s = r.scores.set_index("path")
    assert s.loc["data/train-00001-of-00002.parquet#row=5", "abs_path"] == images.parquet_locator(
        d / "hub" / "data" / "train-00001-of-00002.parquet", 5)
    # a glob of one split; labels as strings and a plain binary image column
    assert len(load_dataset(str(d / "hub" / "data" / "train-00000-*.parquet")).ok) == 20


def test_parquet_with_string_labels_and_a_binary_image_column(demo_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    df, _ = _shards.demo_rows(demo_dir, 12)
    t = pa.table({"img": pa.array([(demo_dir / p).read_bytes() for p in df["path"]], pa.binary()),
                  "Class": list(df["label"])})
    pq.write_table(t, tmp_path / "strings.parquet")
    ds = load_dataset(tmp_path / "strings.parquet")
    assert ds.kind == "parquet" and list(ds.ok["label"]) == list(df["label"])
    assert set(ds.classes) == set(df["label"])
    assert images.load_image(ds.ok["abs_path"][3]).size == Image.open(demo_dir / df.path[3]).size
    # a Parquet path,label table (no image bytes) is still a table
    pq.write_table(pa.table({"path": [str(demo_dir / p) for p in df["path"]], "label": list(df["label"])}),
                   tmp_path / "table.parquet")
    assert load_dataset(tmp_path / "table.parquet", root=str(demo_dir)).kind == "table"
    # a single shard without a label column is refused in one line
    pq.write_table(pa.table({"image": t["img"]}), tmp_path / "nolabel.parquet")
    with pytest.raises(DatasetError, match="no label column"):
        load_dataset(tmp_path / "nolabel.parquet")


def test_unreadable_shards_are_reported_not_fatal(wds, demo_dir, tmp_path):
    d, info = wds
    folder = tmp_path / "mixed"
    shutil.copytree(d / "shards", folder)
    (folder / "shard-00009.tar").write_bytes(b"this is no tar archive" * 40)
    (folder / "broken.parquet").write_bytes(b"PAR1 not really")
    ds = load_dataset(folder, classes_file=str(demo_dir / "classes.txt"))
    rows = ds.problems.set_index("path")["reason"]
    assert "not a readable tar archive" in rows["shard-00009.tar"]
    assert "not a readable Parquet file" in rows["broken.parquet"]
    assert len(ds.ok) == len(info["good"]) + 1  # + bad-bytes: found unreadable only when it is decoded
    assert (ds.ok["path"] == "shard-00001.tar/bad-bytes").sum() == 1


def test_content_key_changes_when_a_shard_changes(wds, demo_dir, tmp_path):
    d, _ = wds
    folder = tmp_path / "copy"
    shutil.copytree(d / "shards", folder)
    key = load_dataset(folder, classes_file=str(demo_dir / "classes.txt")).content_key()
    assert load_dataset(folder, classes_file=str(demo_dir / "classes.txt")).content_key() == key
    data = bytearray((folder / "shard-00000.tar").read_bytes())
    off = images.tar_index(folder / "shard-00000.tar").members["000004.png"][0]
    data[off + 60] ^= 0xFF  # one byte of one image, same size
    st = os.stat(folder / "shard-00000.tar")
    (folder / "shard-00000.tar").write_bytes(bytes(data))
    os.utime(folder / "shard-00000.tar", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert load_dataset(folder, classes_file=str(demo_dir / "classes.txt")).content_key() != key


def test_locators_round_trip_any_name(tmp_path):
    odd = tmp_path / "shards #1 %20 ü"
    odd.mkdir()
    shard = odd / "a#b.tar"
    member = "dir/k #7%.jpg"
    png = io.BytesIO()
    Image.new("RGB", (5, 3), (10, 200, 30)).save(png, format="PNG")
    with tarfile.open(shard, "w") as tf:
        _shards.add_member(tf, member, png.getvalue())
    loc = images.tar_locator(shard, member)
    assert loc.startswith("tar://") and loc.count("#") == 1
    assert images.parse_locator(loc) == images.Locator("tar", str(shard), member=member)
    assert images.read_bytes(loc) == png.getvalue() and images.load_image(loc).size == (5, 3)
    assert images.source_file(loc) == str(shard) and images.export_name(loc) == "k #7%.jpg"
    with images.open_sample(loc) as f:
        assert f.read() == png.getvalue()
    raw = "caf\udce9.parquet"  # a non-UTF-8 file name (surrogateescape)
    assert images.parse_locator(images.parquet_locator(tmp_path / raw, 12)).file == str(tmp_path / raw)
    assert images.parse_locator("/plain/file.png") == images.Locator("file", "/plain/file.png")
    for badloc in ("tar:///x.tar", "parquet:///x.parquet#row=a", "parquet:///x.parquet#7"):
        with pytest.raises(ValueError, match="malformed image locator"):
            images.parse_locator(badloc)


def test_tar_index_reports_damage_and_changes(wds, tmp_path):
    d, _ = wds
    idx = images.tar_index(d / "shards" / "shard-00002.tar")
    assert "damaged or truncated tar after member t03.png" in idx.problem and idx.truncated("t03.png")
    with pytest.raises(OSError, match="t03.png is cut off"):
        idx.read("t03.png")
    with pytest.raises(FileNotFoundError, match="has no member 'zz.png'"):
        idx.read("zz.png")
    good = (d / "shards" / "shard-00000.tar").read_bytes()
    garbage = tmp_path / "garbage.tar"
    cut = images.tar_index(d / "shards" / "shard-00000.tar").members["000002.png"][0] - 512
    garbage.write_bytes(good[:cut] + b"\x01garbage" * 200 + good[cut:])
    g = images.tar_index(garbage)
    assert "after member 000001.cls" in g.problem and list(g.members)[-1] == "000001.cls"
    with pytest.raises(ValueError, match="not a readable tar archive"):
        images.tar_index(_write(tmp_path / "x.tar", b"x" * 2000))
    # a shard rewritten after it was indexed is re-indexed; a stale index refuses to read
    copy = tmp_path / "c.tar"
    copy.write_bytes(good)
    stale = images.tar_index(copy)
    copy.write_bytes(good + b"\0" * 10240)
    assert images.tar_index(copy) is not stale
    with pytest.raises(OSError, match="changed since it was scanned"):
        stale.read("000000.png")


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def test_parquet_rows_stream_in_any_order(hf, demo_dir):
    d, info = hf
    shard = d / "hub" / "data" / "train-00000-of-00002.parquet"
    want = [p.read_bytes() for _, p, _ in info["good"][:20]]
    order = [0, 1, 9, 8, 19, 3, 16, 17, 2]  # forwards, backwards, across row groups of 8
    for r in order:
        assert images.read_bytes(images.parquet_locator(shard, r)) == want[r]
    other = d / "hub" / "data" / "train-00001-of-00002.parquet"
    with pytest.raises(ValueError, match="no image bytes in this row .image.path = 'elsewhere.png'"):
        images.read_bytes(images.parquet_locator(other, 20))
    with pytest.raises(ValueError, match="has no row 99"):
        images.read_bytes(images.parquet_locator(other, 99))
    assert images.export_name(images.parquet_locator(shard, 4)) == "train-00000-of-00002-row4.png"


def test_thumbnails_export_and_keys_of_shard_samples(wds, hf, demo_dir, tmp_path):
    d, info = wds
    r = scan(d / "shards", tmp_path / "ws", classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    ws = r.workspace
    s = r.scores
    # thumbnails: the same image as a thumbnail of the original file
    paths = thumbnails.ensure_thumbnails(ws, list(s["sample_id"][:6]), list(s["abs_path"][:6]))
    for p, (_, src, _) in zip(paths, info["good"][:6]):
        assert p.read_bytes() == thumbnails.make_thumbnail(src)
    bad = ws.dataset().set_index("path").loc["shard-00001.tar/bad-bytes"]
    card = thumbnails.ensure_thumbnail(ws, bad["sample_id"], bad["abs_path"])
    assert Image.open(card).size == (thumbnails.DEFAULT_SIZE, thumbnails.DEFAULT_SIZE)  # the stand-in card
    # the CSV export names samples by shard/key; the ImageFolder export writes the bytes under the key
    _, table = export_csv(ws, tmp_path / "clean.csv")
    assert list(table["path"]) == list(s["path"])
    info_if = export_imagefolder(ws, table, tmp_path / "folder", mode="link")
    assert info_if["images"] == len(table) and info_if["written_from_shards"] == len(table)
    for path, src, label in info["good"][:3] + info["good"][-3:]:
        key = path.rsplit("/", 1)[1]
        out = tmp_path / "folder" / label / f"{key}.png"
        assert out.is_file() and not out.is_symlink() and out.read_bytes() == src.read_bytes()
    # Parquet rows are named <shard>-row<N>.<format>; an export may not go into the shard folder
    hd, hinfo = hf
    rh = scan(hd / "hub", tmp_path / "wsh", encoder=PIXELS)
    _, th = export_csv(rh.workspace, tmp_path / "h.csv")
    export_imagefolder(rh.workspace, th, tmp_path / "hfolder", mode="copy")
    first = tmp_path / "hfolder" / hinfo["good"][0][2] / "train-00000-of-00002-row0.png"
    assert first.read_bytes() == hinfo["good"][0][1].read_bytes()
    from clipcleaner_core.guards import UnsafeTargetError

    with pytest.raises(UnsafeTargetError):
        export_imagefolder(rh.workspace, th, hd / "hub" / "data", mode="copy")


def test_workspace_inside_a_folder_of_shards_is_not_a_shard(hf, tmp_path):
    d, info = hf
    folder = tmp_path / "hub"
    shutil.copytree(d / "hub", folder)
    scan(folder, folder / "ws", encoder=PIXELS)  # the workspace's own parquet files are not shards
    again = scan(folder, folder / "ws", encoder=PIXELS)
    assert len(again.scores) == len(info["good"])
    assert not any("ws/" in p for p in again.workspace.dataset()["path"])


def test_shard_helpers():
    assert shards.expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert shards.expand_braces("{a,b}/x-{8..10}.tar") == ["a/x-8.tar", "a/x-9.tar", "a/x-10.tar", "b/x-8.tar",
                                                           "b/x-9.tar", "b/x-10.tar"]
    assert shards.is_pattern("data/train-*.parquet") and not shards.is_pattern("data/train.parquet")
    assert images.key_and_ext("a/000123.seg.png") == ("a/000123", "seg.png")
    assert images.key_and_ext(".hidden") == (None, None)
    assert shards.resolve_label(2, ["a", "b", "c"], None) == ("c", "ok", "")
    assert shards.resolve_label("b", None, ["a", "b"]) == ("b", "ok", "")
    assert shards.resolve_label(-1, ["a"], None)[1] == "empty_label"
    assert shards.resolve_label(None, None, None)[1] == "empty_label"
    assert shards.resolve_label("nan", None, None)[1] == "empty_label"
    assert shards.resolve_label("z", None, ["a"])[1] == "unknown_label"
    assert shards.resolve_label(7, None, None) == ("7", "ok", "")


def test_app_detail_view_of_a_shard_sample(wds, demo_dir, tmp_path):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    d, info = wds
    r = scan(d / "shards", tmp_path / "ws", classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.session_state["ws_path"] = str(r.workspace.path)
    at.session_state["reviewer"] = "tester"
    at.run()
    at.switch_page("pages/suspects.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    ids = grid_ids(at, "sus")
    assert ids and all(c["img"] for c in grid(at, "sus")["cards"])  # every card has its thumbnail
    sid = ids[0]
    row = r.scores.set_index("sample_id").loc[sid]
    grid_send(at, "sus", focus=sid, detail=sid)  # Enter / the card's Detail button
    assert not at.exception, [e.value for e in at.exception]
    d = grid(at, "sus")["detail"]
    assert d["sid"] == sid and d["img"] and all(n["img"] for n in d["neighbours"])  # the large image and neighbours
    assert d["path"] == row["path"]  # the sample named by its shard and key
    src = dict((p, f) for p, f, _ in info["good"])[row["path"]]
    large = thumbnails.thumbnail_path(r.workspace, sid, thumbnails.LARGE_SIZE)
    assert large.read_bytes() == thumbnails.make_thumbnail(src, thumbnails.LARGE_SIZE)  # the real image, not a card


def test_member_names_that_are_not_utf8_still_work(demo_dir, tmp_path):
    src = demo_dir / "images" / "00005.png"
    shard = tmp_path / "s" / "raw.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tf:
        _shards.add_member(tf, "caf\udce9.png", src.read_bytes())  # the bytes b"caf\xe9.png"
        _shards.add_member(tf, "caf\udce9.txt", b"five")
    ds = load_dataset(shard.parent)
    row = ds.ok.iloc[0]
    assert row["path"] == "raw.tar/caf\\xe9" and row["label"] == "five"
    assert row["abs_path"].isascii() and images.read_bytes(row["abs_path"]) == src.read_bytes()
    ds.samples.to_parquet(tmp_path / "d.parquet")  # storable (no lone surrogates)
