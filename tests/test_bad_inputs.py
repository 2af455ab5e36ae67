"""Bad input never crashes a scan (issue 4): the generated corpus of tests/_corpus.py through the real loaders,
the embedding stage and ``pipeline.scan``; each bad sample is reported with its file and reason, listed as
unusable in dataset.parquet / ``ScanResult.problems`` and left out of the scores."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import _corpus
import numpy as np
import pytest
from PIL import Image

from clipcleaner_core import cli, pipeline
from clipcleaner_core.config import EncoderConfig
from clipcleaner_core.dataset import DatasetError, load_dataset, make_sample_id
from clipcleaner_core.detectors import METHODS, ScoreConfig, detect
from clipcleaner_core.images import limit_aspect, load_image
from clipcleaner_core.workspace import Workspace

PIXELS = EncoderConfig(encoder="pixels")  # no weights needed (not CLIP)

IMAGE_CASE_NAMES = [c.name for c, _ in _corpus.image_cases()] + [
    "symlink_loop_self", "symlink_to_root", "symlink_file_loop", "dangling_symlink", "symlink_file_outside_root",
    "symlink_dir_outside_root", "top_level_file", "hidden_entries", "workspace_inside_root", "export_inside_root"]


# --------------------------------------------------------------------------------------- ImageFolder corpus
@pytest.fixture(scope="module")
def folder_scan(tmp_path_factory):
    """The ImageFolder corpus scanned once with the pixels encoder."""
    base = tmp_path_factory.mktemp("corpus")
    corpus = _corpus.build_imagefolder(base / "data")
    logs: list[str] = []
    result = pipeline.scan(corpus.root, base / "ws", log=logs.append, encoder=PIXELS)
    dataset = Workspace(base / "ws").dataset()
    return corpus, result, dataset, logs


def _sid(case: _corpus.Case) -> str:
    return make_sample_id(case.rel_str)


@pytest.mark.parametrize("name", IMAGE_CASE_NAMES)
def test_image_case(folder_scan, name):
    corpus, result, dataset, _ = folder_scan
    case = corpus.case(name)
    scored = set(result.scores["sample_id"])
    if case.usable:
        assert _sid(case) in scored, f"{case.rel_str} should have been scored"
        row = dataset[dataset["sample_id"] == _sid(case)].iloc[0]
        assert row["status"] == "ok" and row["reason"] == ""
        assert row["label"] == case.label
        return
    if not case.in_samples:  # not a sample: reported in the notes, and nothing under it was taken
        notes = result.settings.notes
        hit = [n for n in notes if case.rel_str in n and case.why in n.lower()]
        assert hit, notes
        assert not dataset["path"].str.startswith(case.rel_str + "/").any()
        assert not dataset["path"].str.contains(r"(?:^|/)\.", regex=True).any()  # no hidden entry became a sample
        assert not set(result.settings.classes) & {"ws", ".thumbnails"}
        return
    sid = _sid(case)
    assert sid not in scored, f"{case.rel_str} must not be scored"
    prob = result.problems[result.problems["sample_id"] == sid]
    assert len(prob) == 1, f"{case.rel_str} missing from ScanResult.problems"
    row = prob.iloc[0]
    if case.status:
        assert row["status"] == case.status, row["reason"]
    reason = row["reason"]
    shown = case.basename if isinstance(case.rel, str) else "bad_\\xff\\xfe_name.png"
    assert shown in reason, reason  # the message names the file ...
    assert case.why.lower() in reason.lower(), reason  # ... and the reason
    stored = dataset[dataset["sample_id"] == sid]
    assert len(stored) == 1 and stored.iloc[0]["status"] == row["status"]  # listed in dataset.parquet too


def test_folder_scan_totals(folder_scan):
    corpus, result, dataset, logs = folder_scan
    usable = [c for c in corpus.cases if c.usable]
    bad = [c for c in corpus.cases if not c.usable and c.in_samples]
    assert len(result.scores) == len(corpus.good) + len(usable)
    assert len(result.problems) == len(bad)
    assert set(result.scores["sample_id"]).isdisjoint(result.problems["sample_id"])
    assert len(dataset) == len(result.scores) + len(result.problems)
    # the symlink back to the root did not give the other classes' images a second label
    assert dataset["sample_id"].is_unique and not dataset["path"].str.contains("/up/").any()
    assert result.settings.counts["unusable"] == len(bad)
    emb = np.asarray(result.workspace.embeddings())
    assert emb.shape[0] == len(result.scores) and np.isfinite(emb.astype(np.float32)).all()
    assert any("failed to decode" in m for m in logs)


def test_exif_rotated_jpeg_is_upright(tmp_path):
    data, upright = _corpus.exif_rotated_pair()
    p = tmp_path / "rot.jpg"
    p.write_bytes(data)
    with Image.open(p) as raw:
        assert raw.size == (24, 48)  # stored sideways
    im = load_image(p)
    assert im.size == (48, 24) and im.mode == "RGB"
    a = np.asarray(im, dtype=np.int32)
    assert a[12, 4, 0] > 180 and a[12, 4, 2] < 80, "left third must be red"
    assert a[12, 40, 2] > 180 and a[12, 40, 0] < 80, "right part must be blue"
    assert np.abs(a - np.asarray(upright, dtype=np.int32)).mean() < 8
    thumbnails = pytest.importorskip("clipcleaner_core.thumbnails")  # the app's thumbnail path
    import io

    th = Image.open(io.BytesIO(thumbnails.make_thumbnail(p, size=24)))
    assert th.size == (24, 12)
    t = np.asarray(th.convert("RGB"), dtype=np.int32)
    assert t[6, 1, 0] > 150 and t[6, 22, 2] > 150
    # the embedding path (the DataLoader dataset used by embed_samples) sees the upright image
    from clipcleaner_core.embeddings import _ImageSet
    from clipcleaner_core.encoders import PixelEncoder

    enc = PixelEncoder(size=8)
    x, _, ok, reason, stats = _ImageSet([str(p)], enc.preprocess)[0]
    assert ok and reason == "" and stats["width"] == upright.size[0]  # statistics of the upright image
    want = enc.preprocess(upright).numpy()
    wrong = enc.preprocess(upright.transpose(Image.Transpose.ROTATE_90)).numpy()
    assert np.abs(x.numpy() - want).mean() < 0.03 < np.abs(x.numpy() - wrong).mean()


def test_modes_are_converted_faithfully(folder_scan):
    corpus, *_ = folder_scan
    root = corpus.root
    # palette with a transparent index and LA/RGBA alpha are composited on white
    pal = load_image(root / "bird/palette.png")
    with Image.open(root / "bird/palette.png") as raw:
        transparent = np.asarray(raw) == raw.info["transparency"]
    if transparent.any():
        assert (np.asarray(pal)[transparent] == 255).all()
    rgba = np.asarray(load_image(root / "cat/rgba.png"), dtype=np.int32)
    assert (rgba[0] >= 240).all(), "alpha ~0 on the top row (vertical alpha gradient) must come out white"
    assert (rgba[-1] < 240).any(), "opaque bottom row keeps its colour"
    la = np.asarray(load_image(root / "dog/la.png"), dtype=np.int32)
    assert (la[0] >= 240).all() and (la[..., 0] == la[..., 1]).all()
    # 16-bit grayscale keeps its full range (not clipped to white), 16-bit RGB decodes
    g16 = np.asarray(load_image(root / "dog/gray16.png"))
    assert g16.min() <= 2 and g16.max() >= 250 and len(np.unique(g16)) > 100
    assert load_image(root / "dog/rgb16.png").size == (12, 10)
    # CMYK comes back close to the RGB it was made from
    cmyk = np.asarray(load_image(root / "cat/cmyk.jpg"), dtype=np.float64)
    src = np.asarray(_corpus.good_image("cat", 94), dtype=np.float64)
    assert np.abs(cmyk.mean((0, 1)) - src.mean((0, 1))).max() < 20
    for rel in ("dog/gray.png", "dog/mono.bmp", "cat/pixel.png", "bird/anim.gif", "cat/really_png.jpg"):
        assert load_image(root / rel).mode == "RGB"


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_corpus.png_bytes(120_000, 120_000, 8, 2, None))
    assert bomb.stat().st_size < 200  # tiny file, huge declared size
    from PIL import ImageFile

    def no_decode(self):
        raise AssertionError("pixels of an over-limit image must not be decoded")

    small = tmp_path / "small.png"
    _corpus.good_image("cat", 1, size=16).save(small)  # 256 pixels
    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", no_decode)
        with pytest.raises(ValueError, match="decompression-bomb"):
            load_image(bomb)
        with pytest.raises(ValueError, match="16x16 = 256 pixels is over the limit of 200"):
            load_image(small, max_pixels=200)  # between 1x and 2x the limit: Pillow only warns, we refuse
        with pytest.raises(ValueError, match="decompression-bomb"):
            load_image(small, max_pixels=100)
    before = Image.MAX_IMAGE_PIXELS
    assert load_image(small, max_pixels=256).size == (16, 16)
    assert load_image(bomb.parent / "small.png", max_pixels=before * 3).size == (16, 16)  # raising the limit
    assert Image.MAX_IMAGE_PIXELS == before  # the global is left as it was


def test_extreme_aspect_is_bounded_before_encoding():
    wide = Image.new("RGB", (20000, 1), (200, 10, 10))
    out = limit_aspect(wide)
    assert out.size == (16, 1)
    assert limit_aspect(Image.new("RGB", (1, 20000))).size == (1, 16)
    normal = Image.new("RGB", (640, 480))
    assert limit_aspect(normal) is normal
    # what a 224-px CLIP transform (resize the short side, centre-crop) would have to allocate
    w, h = out.size
    assert (224 * w // h) * 224 * 3 < 3_000_000  # 2.4 MB instead of ~3 GB for the raw strip


def test_unreadable_permissions(tmp_path):
    """A file without read permission and a folder that cannot be listed are reported, the rest scans.

    As root, chmod does not stop reads, so the check runs in a child process whose capability bounding set
    lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: the same uid, but permission bits apply as for a user."""
    root = tmp_path / "perm"
    for label in ("cat", "dog"):
        _corpus.write_good_images(root / label, label, 3)
    locked = root / "cat" / "locked.png"
    _corpus.good_image("cat", 40).save(locked)
    hidden_dir = root / "dog" / "private"
    _corpus.write_good_images(hidden_dir, "dog", 2, start=50)
    locked.chmod(0)
    hidden_dir.chmod(0)
    code = (
        "import json, sys\n"
        "from clipcleaner_core import pipeline\n"
        "from clipcleaner_core.config import EncoderConfig\n"
        "r = pipeline.scan(sys.argv[1], sys.argv[2], encoder=EncoderConfig(encoder='pixels'))\n"
        "print(json.dumps({'scored': sorted(r.scores['path']), 'problems': r.problems[['path', 'status', "
        "'reason']].to_dict('records'), 'notes': list(r.settings.notes)}))\n"
    )
    libc = ctypes.CDLL(None, use_errno=True)

    def drop_dac_override() -> None:
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    preexec = drop_dac_override if os.geteuid() == 0 else None
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "ws")], capture_output=True,
                              text=True, preexec_fn=preexec, timeout=300)
    finally:
        locked.chmod(0o644)
        hidden_dir.chmod(0o755)
    if proc.returncode != 0 and "prctl" in proc.stderr:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["scored"]) == 6 and "cat/locked.png" not in out["scored"]
    assert out["problems"] == [{"path": "cat/locked.png", "status": "unreadable",
                                "reason": f"{locked}: permission denied"}]
    assert any(str(hidden_dir) in n and "Permission denied" in n for n in out["notes"]), out["notes"]


def test_ten_percent_bad_files_still_scan_and_score_the_rest(tmp_path):
    root = tmp_path / "data"
    good, bad = _corpus.add_bad_fraction(root, n_good_per_class=30, fraction=0.1)
    assert len(good) == 90 and len(bad) == 10
    r = pipeline.scan(root, tmp_path / "ws", encoder=PIXELS)
    assert sorted(r.scores["path"]) == sorted(good)
    assert sorted(r.problems["path"]) == sorted(bad)
    for path, reason in zip(r.problems["path"], r.problems["reason"]):
        assert Path(path).name in reason
    # the three colour classes are easy and correctly labelled: the default detector flags none of the 90
    assert r.scores["flagged"].sum() == 0
    assert list(r.settings.detection.criteria_used) == ["lr_loss", "lr_cons"]
    assert r.settings.counts == {**r.settings.counts, "samples": 100, "unusable": 10, "scored": 90}


def test_clip_checkpoint_cli_scan_of_the_corpus(tiny_clip, tmp_path, capsys):
    """The same corpus through the CLIP code path (tiny random-weight open_clip model, not CLIP) and the CLI."""
    corpus = _corpus.build_imagefolder(tmp_path / "data", n_good=4)
    ws = tmp_path / "ws"
    rc = cli.main(["scan", str(corpus.root), "-w", str(ws), "--encoder", "clip", "--model", tiny_clip["model"],
                   "--model-config", tiny_clip["config"], "--checkpoint", tiny_clip["checkpoint"], "--workers", "0",
                   "--show-problems", "100", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    bad = [c for c in corpus.cases if not c.usable and c.in_samples]
    assert f"{len(bad)} sample(s) could not be used" in out
    for c in bad:
        shown = c.basename if isinstance(c.rel, str) else "bad_\\xff\\xfe_name.png"
        assert shown in out, shown
    scores = Workspace(ws).scores()
    assert len(scores) == 3 * 4 + sum(c.usable for c in corpus.cases)
    settings = json.loads((ws / "workspace.json").read_text())["settings"]
    assert settings["encoder_kind"] == "clip" and settings["zero_shot"]["available"]
    assert "symlink loop" in out and "top level" in out  # the notes are printed


# -------------------------------------------------------------------------------------------- table corpus
@pytest.fixture(scope="module")
def table_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables") / "t"
    root.mkdir()
    cases = {tc.name: tc for tc in _corpus.write_table_cases(root)}
    assert list(cases) == _corpus.TABLE_CASE_NAMES
    return root, cases


@pytest.mark.parametrize("name", _corpus.TABLE_CASE_NAMES)
def test_table_case(table_cases, name, tmp_path):
    root, cases = table_cases
    tc = cases[name]
    if tc.error is not None:
        with pytest.raises(DatasetError) as ei:
            load_dataset(tc.file, **tc.kwargs)
        msg = str(ei.value)
        assert str(tc.file) in msg and tc.error in msg, msg
        with pytest.raises(DatasetError):  # the scan stops with the same clear error, no traceback from inside
            pipeline.scan(tc.file, tmp_path / "ws", **tc.kwargs, encoder=PIXELS)
        return
    ds = load_dataset(tc.file, **tc.kwargs)
    s = ds.samples
    for written, status in tc.statuses.items():
        want = os.path.normpath(os.path.join(root, written))
        rows = s[s["abs_path"] == want]
        assert len(rows) >= 1, (written, s[["path", "abs_path", "status"]].to_dict("records"))
        assert rows.iloc[0]["status"] == status, rows.iloc[0]["reason"]
    if tc.counts is not None:
        assert s["status"].value_counts().to_dict() == tc.counts
    if tc.classes is not None:
        assert ds.classes == tc.classes
    if tc.note is not None:
        assert any(tc.note in n for n in ds.notes), ds.notes
    for reason in ds.problems["reason"]:
        assert tc.file.name in reason and (" line " in reason or " row " in reason), reason
        assert len(reason) < 1000, reason[:200]  # one readable line, never a 200 KB cell echoed
    assert s["sample_id"].is_unique
    # the scan completes, scores exactly the usable rows and lists the others as problems
    r = pipeline.scan(tc.file, tmp_path / "ws", **tc.kwargs, encoder=PIXELS)
    assert sorted(r.scores["sample_id"]) == sorted(ds.ok["sample_id"])
    assert sorted(r.problems["sample_id"]) == sorted(ds.problems["sample_id"])
    if len(ds.ok) == 0:
        assert any("no usable image" in n for n in r.settings.notes)


def test_paths_outside_the_root_need_the_flag(table_cases, tmp_path, capsys):
    root, cases = table_cases
    for name in ("absolute_outside.csv", "dotdot_escape.csv"):
        tc = cases[name]
        r = pipeline.scan(tc.file, tmp_path / f"ws-{name}", encoder=PIXELS)
        assert r.problems["status"].tolist() == ["outside_root"]
        assert "--allow-outside-root" in r.problems["reason"].iloc[0]
        assert not r.scores["path"].str.contains("elsewhere").any()
        r2 = pipeline.scan(tc.file, tmp_path / f"ws2-{name}", allow_outside_root=True, encoder=PIXELS)
        assert len(r2.problems) == 0 and r2.scores["path"].str.endswith("elsewhere.png").sum() == 1
    tc = cases["dotdot_escape.csv"]
    assert cli.main(["scan", "--encoder", "pixels", str(tc.file), "-w", str(tmp_path / "ws-cli"), "-q"]) == 0
    assert "outside the dataset root" in capsys.readouterr().out
    assert cli.main(["scan", "--encoder", "pixels", str(tc.file), "-w", str(tmp_path / "ws-cli2"), "-q",
                     "--allow-outside-root"]) == 0
    assert "could not be used" not in capsys.readouterr().out


def test_empty_dataset_is_a_clear_outcome(table_cases, tmp_path, capsys):
    root, cases = table_cases
    tc = cases["header_only.csv"]
    r = pipeline.scan(tc.file, tmp_path / "ws", encoder=PIXELS)
    assert len(r.scores) == 0 and len(r.problems) == 0
    rc = cli.main(["scan", "--encoder", "pixels", str(tc.file), "-w", str(tmp_path / "ws2"), "-q"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "no usable image" in captured.err and str(tc.file) in captured.err
    assert "Traceback" not in captured.err
    # a folder whose every file is broken: same outcome, with each file listed
    d = tmp_path / "allbad"
    (d / "cat").mkdir(parents=True)
    (d / "cat" / "a.jpg").write_bytes(b"")
    (d / "cat" / "b.png").write_bytes(b"not a png")
    rc = cli.main(["scan", "--encoder", "pixels", str(d), "-w", str(tmp_path / "ws3"), "-q"])
    captured = capsys.readouterr()
    assert rc == 1 and "a.jpg" in captured.out and "b.png" in captured.out
    assert "no usable image" in captured.err


# ---------------------------------------------------------------------------------- degenerate scoring
@pytest.mark.parametrize("n,k,layout", [
    (1, 1, "one"), (1, 3, "one"), (2, 2, "each"), (3, 2, "each"), (4, 1, "one"), (5, 5, "each"),
    (9, 3, "singleton"), (12, 2, "each"), (20, 4, "empty"), (30, 3, "singleton")])
@pytest.mark.parametrize("zero_shot", [False, True])
def test_detect_degenerate_shapes(n, k, layout, zero_shot):
    """Single class, K=2, a class with one image, classes with no image, N=1: no crash, sane outputs."""
    rng = np.random.RandomState(n * 100 + k)
    x = rng.normal(size=(n, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if layout == "one":
        y = np.zeros(n, dtype=np.int64)
    elif layout == "each":
        y = np.arange(n) % k
    elif layout == "singleton":  # last class has exactly one sample
        y = np.r_[np.arange(n - 1) % (k - 1), k - 1]
    else:  # only the first half of the classes are used
        y = np.arange(n) % max(1, k // 2)
    tf = owner = None
    if zero_shot:
        tf = rng.normal(size=(2 * k, 6))
        tf /= np.linalg.norm(tf, axis=1, keepdims=True)
        owner = np.repeat(np.arange(k), 2)
    classes = [f"c{i}" for i in range(k)]
    for method in METHODS:
        det = detect(x, y, classes, ScoreConfig(method=method), tf, owner)
        t = det.table
        assert len(t) == n and t["flagged"].dtype == bool
        assert np.isfinite(t["noise_score"]).all()
        for c in ("zs_loss_score", "zs_cons_score", "lr_loss_score", "lr_cons_score"):
            v = t[c].dropna()
            assert ((v >= 0) & (v <= 1)).all(), c
        assert set(t["suggested_label"]) <= set(classes)
        for p in det.probs.values():  # dense float16 at this K (probs.py)
            d = np.asarray(p.dense_view(), dtype=np.float64)
            assert d.shape == (n, k) and np.allclose(d.sum(1), 1.0, atol=2e-3)
        if k == 1:
            assert not t["flagged"].any()  # one class: nothing can be mislabelled


@pytest.mark.parametrize("name,content,why", [
    ("classes.txt", b"cat\n\xff\xfe dog\n", "not UTF-8"),
    ("classes.json", b'["cat", "dog"', "not valid JSON"),
    ("classes.json", b'{"cat": 1}', "must hold a list"),
    ("classes.txt", b"# only a comment\n\n", "lists no class"),
    ("missing.txt", None, "cannot read classes file"),
])
def test_classes_file_problems_are_named(tmp_path, name, content, why):
    data = tmp_path / "data"
    _corpus.write_good_images(data / "cat", "cat", 2)
    cf = tmp_path / name
    if content is not None:
        cf.write_bytes(content)
    with pytest.raises(DatasetError) as ei:
        load_dataset(data, classes_file=cf)
    assert str(cf) in str(ei.value) and why in str(ei.value)
    assert cli.main(["scan", "--encoder", "pixels", str(data), "-w", str(tmp_path / "ws"), "--classes", str(cf),
                     "-q"]) == 2


def test_non_utf8_class_folder(tmp_path):
    data = tmp_path / "data"
    _corpus.write_good_images(data / "cat", "cat", 3)
    _corpus.write_good_images(data / "dog", "dog", 3)
    bad = os.path.join(os.fsencode(data), b"caf\xe9")  # Latin-1 folder name
    os.makedirs(bad)
    _corpus.good_image("bird", 1).save(os.path.join(bad, b"x.png").decode("utf-8", "surrogateescape"))
    r = pipeline.scan(data, tmp_path / "ws", encoder=PIXELS)
    assert len(r.scores) == 6
    assert r.problems["status"].tolist() == ["invalid_name"]
    assert "caf\\xe9/x.png" in r.problems["reason"].iloc[0] and "not valid UTF-8" in r.problems["reason"].iloc[0]
    assert "caf\\xe9" in r.settings.classes  # shown escaped, never crashes the parquet/JSON writers


def test_dataset_opened_through_a_symlinked_folder_keeps_relative_ids(tmp_path):
    real = tmp_path / "real"
    _corpus.write_good_images(real / "img", "cat", 2)
    (real / "labels.csv").write_text(f"path,label\nimg/cat_000.png,cat\n{real / 'img' / 'cat_001.png'},cat\n",
                                     encoding="utf-8")
    link = tmp_path / "link"
    os.symlink(real, link)
    a = load_dataset(real / "labels.csv")
    b = load_dataset(link / "labels.csv")
    assert list(a.samples["path"]) == list(b.samples["path"]) == ["img/cat_000.png", "img/cat_001.png"]
    assert list(a.samples["sample_id"]) == list(b.samples["sample_id"])
    assert set(b.samples["status"]) == {"ok"}
