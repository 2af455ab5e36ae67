"""Files and exports (issue 4): atomic exports, untouched sources, formula escaping, bounded paths, app config."""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import stat
import tomllib
from pathlib import Path

import _corpus
import pandas as pd
import pytest

from clipcleaner_core import cli, export, pipeline
from clipcleaner_core import workspace as workspace_mod
from clipcleaner_core.config import EncoderConfig
from clipcleaner_core.dataset import load_dataset
from clipcleaner_core.decisions import ReviewStore
from clipcleaner_core.export import cleaned_table, export_csv, export_imagefolder, export_report

PIXELS = EncoderConfig(encoder="pixels")  # no weights needed (not CLIP)

REPO = Path(__file__).resolve().parents[1]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: class folders whose names a spreadsheet would run as formulas, plus a numeric one that must stay a number
EVIL_CLASSES = {"=cmd|' -C calc'!A0": "cat", "+plus": "dog", "-minus": "bird", "@at": "cat", "-1": "dog"}


def tree_digest(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: files by content hash, size, mtime and mode; links by target; folders."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns,
                            st.st_mode)
    return out


@pytest.fixture()
def evil_ws(tmp_path):
    """An ImageFolder with formula-like class and file names, scanned, with a few review decisions."""
    root = tmp_path / "data"
    for k, (cls, look) in enumerate(EVIL_CLASSES.items()):
        for i in range(4):
            name = "=HYPERLINK(x).png" if (k, i) == (0, 0) else f"@SUM(1)_{i}.png" if k == 1 else f"img_{i}.png"
            (root / cls).mkdir(parents=True, exist_ok=True)
            _corpus.good_image(look, 10 * k + i).save(root / cls / name)
    ws = tmp_path / "ws"
    r = pipeline.scan(root, ws, encoder=PIXELS)
    ids = r.scores.set_index("path")["sample_id"]
    with ReviewStore.for_workspace(ws, reviewer="@evil") as store:
        store.record(ids["=cmd|' -C calc'!A0/=HYPERLINK(x).png"], "relabel", "@at")  # a class: relabel targets
        # must be classes (issue 9), so the formula-like class names are the relabel targets here
        store.record(ids["+plus/@SUM(1)_1.png"], "exclude")
        store.record(ids["-1/img_0.png"], "accept")
    return root, ws, r


def test_csv_cells_are_escaped_through_the_real_export(evil_ws, tmp_path):
    root, ws, _ = evil_ws
    path, table = export_csv(ws, tmp_path / "out.csv")
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert header == export.EXPORT_COLUMNS and len(body) == len(table) == 19  # 20 images, 1 excluded
    n_escaped = 0
    for row in body:
        for cell in row:
            if cell.startswith(FORMULA_START):
                float(cell)  # only plain numbers may start with - or +
            n_escaped += cell.startswith("'")
    assert n_escaped > 19  # paths, labels and the reviewer of the formula-like rows
    cells = {c for row in body for c in row}
    assert "'=cmd|' -C calc'!A0/=HYPERLINK(x).png" in cells
    assert "'@at" in cells and "'@evil" in cells and "'+plus" in cells and "'-minus" in cells
    relabelled = next(row for row in body if row[0] == "'=cmd|' -C calc'!A0/=HYPERLINK(x).png")
    assert relabelled[1] == "'@at" and relabelled[2] == "'=cmd|' -C calc'!A0"  # label, original_label
    assert "-1" in cells  # a numeric label stays a number
    assert "-1/img_0.png" not in cells and "'-1/img_0.png" in cells
    # the same safe writer backs the CLI export
    assert cli.main(["export", str(ws), "-o", str(tmp_path / "cli.csv")]) == 0
    assert (tmp_path / "cli.csv").read_text(encoding="utf-8") == text
    # and a cleaned CSV loads back into clipcleaner as it was (the quote is taken off again)
    back = load_dataset(path, root=root)
    assert len(back.problems) == 0, back.problems["reason"].tolist()
    got = dict(zip(back.samples["path"], back.samples["label"]))
    assert got == dict(zip(table["path"], table["label"]))
    assert got["=cmd|' -C calc'!A0/=HYPERLINK(x).png"] == "@at"


def _half_writing_fdopen(real_fdopen):
    """``os.fdopen`` whose files write half of the data, then fail like a full disk."""

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)

        class HalfWriter:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                f.write(data[: len(data) // 2])
                f.flush()
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")

            def flush(self):
                f.flush()

            def fileno(self):
                return f.fileno()

        return HalfWriter()

    return fdopen


def test_failed_export_leaves_the_previous_one_intact(evil_ws, monkeypatch):
    root, ws, r = evil_ws
    path, table = export_csv(ws)
    rpath, _ = export_report(ws, table)
    before, report_before = path.read_bytes(), rpath.read_bytes()
    sid = r.scores["sample_id"].iloc[-1]
    with ReviewStore.for_workspace(ws) as store:  # the next export would differ
        store.record(sid, "exclude")
    with monkeypatch.context() as m:
        m.setattr(workspace_mod.os, "fdopen", _half_writing_fdopen(os.fdopen))
        with pytest.raises(OSError, match="No space left"):
            export_csv(ws)
        with pytest.raises(OSError, match="No space left"):
            export_report(ws, table)
    assert path.read_bytes() == before and rpath.read_bytes() == report_before
    assert sorted(p.name for p in path.parent.iterdir()) == ["cleaned.csv", "report.json"]  # no temp file left
    # a failure when renaming into place is just as harmless
    with monkeypatch.context() as m:
        def no_replace(src, dst):
            raise OSError(errno.EIO, "I/O error (simulated)")

        m.setattr(workspace_mod.os, "replace", no_replace)
        with pytest.raises(OSError, match="simulated"):
            export_csv(ws)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["cleaned.csv", "report.json"]
    _, t2 = export_csv(ws)  # and the next export works and has the new decision
    assert sid not in set(t2["sample_id"]) and len(t2) == len(table) - 1


def test_failed_imagefolder_export_leaves_the_previous_one_intact(evil_ws, tmp_path, monkeypatch):
    root, ws, _ = evil_ws
    _, table = export_csv(ws)
    out = tmp_path / "clean"
    export_imagefolder(ws, table, out, mode="link")
    first = tree_digest(out)
    assert len([v for v in first.values() if v[0] == "link"]) == len(table)
    smaller = table.iloc[:5]
    real_symlink = os.symlink
    calls = {"n": 0}

    def failing_symlink(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real_symlink(src, dst, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(export.os, "symlink", failing_symlink)
        with pytest.raises(OSError, match="simulated"):
            export_imagefolder(ws, smaller, out, mode="link")
    assert tree_digest(out) == first
    real_replace = os.replace

    def failing_swap(src, dst):
        if str(src).endswith(".building"):
            raise OSError(errno.EIO, "I/O error (simulated)")
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(export.os, "replace", failing_swap)
        with pytest.raises(OSError, match="simulated"):
            export_imagefolder(ws, smaller, out, mode="copy")
    assert tree_digest(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "data", "ws"]  # no .building / .old left
    info = export_imagefolder(ws, smaller, out, mode="copy")
    files = [k for k, v in tree_digest(out).items() if v[0] == "file" and k != ".clipcleaner-imagefolder.json"]
    assert info["images"] == 5 and len(files) == 5


def test_imagefolder_export_stays_inside_its_folder(evil_ws, tmp_path):
    root, ws, r = evil_ws
    scores = r.scores
    hostile = ["../../escaped", "..", ".", "/etc/cron.d", "a\\..\\..\\b", "../" * 8 + "tmp/x"]
    decisions = pd.DataFrame({"sample_id": scores["sample_id"].iloc[: len(hostile)], "action": "relabel",
                              "label": hostile, "reviewer": "x", "updated_at": ""})
    table = cleaned_table(scores, decisions)
    out = tmp_path / "exp" / "clean"
    before = {p for p in tmp_path.rglob("*")}
    export_imagefolder(ws, table, out, mode="copy")
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(p == out.parent or p == out or out in p.parents for p in created), sorted(created)
    assert len([p for p in created if p.is_file() and p.name != ".clipcleaner-imagefolder.json"]) == len(table)


def test_scan_review_export_never_touch_the_source_images(evil_ws, tmp_path):
    root, ws, r = evil_ws
    # a symlinked image in the source tree too: exports must not follow it into writing
    os.symlink(root / "-1" / "img_1.png", root / "-1" / "linked.png")
    before = tree_digest(root)
    res = pipeline.scan(root, ws, encoder=PIXELS)  # re-scan, then the whole review + export cycle
    with ReviewStore.for_workspace(ws) as store:
        store.record_many(list(res.scores["sample_id"].iloc[:3]), "exclude")
        store.record(res.scores["sample_id"].iloc[4], "relabel", "+plus")
        store.undo()
        store.record(res.scores["sample_id"].iloc[5], "relabel", "-minus")
    pipeline.rescore(ws)
    path, table = export_csv(ws, undecided="suggested")
    export_report(ws, table)
    export_imagefolder(ws, table, tmp_path / "linked", mode="link")
    export_imagefolder(ws, table, tmp_path / "copied", mode="copy")
    export_imagefolder(ws, table, tmp_path / "copied", mode="copy")  # over an existing export
    assert cli.main(["export", str(ws), "--imagefolder", str(tmp_path / "cli_if"), "--report",
                     str(tmp_path / "r.json")]) == 0
    thumbnails = pytest.importorskip("clipcleaner_core.thumbnails")
    thumbnails.ensure_thumbnails(workspace_mod.Workspace(ws), list(res.scores["sample_id"]),
                                 list(res.scores["abs_path"]))
    assert tree_digest(root) == before  # same files, bytes, sizes, mtimes, modes, links; nothing added
    # the copies are byte-identical to their sources
    src = res.scores.set_index("sample_id")["abs_path"]
    for sid, label in zip(table["sample_id"].iloc[:5], table["label"].iloc[:5]):
        folder = tmp_path / "copied" / str(label).replace("/", "_").strip(".")
        matches = [p for p in folder.iterdir() if p.name.endswith(Path(src[sid]).name)]
        assert any(p.read_bytes() == Path(src[sid]).read_bytes() for p in matches)


def test_streamlit_server_config_is_local_and_bounded():
    cfg_path = REPO / ".streamlit" / "config.toml"
    if not cfg_path.is_file():
        pytest.skip(".streamlit/config.toml is not in this checkout yet (owned by the app)")
    cfg = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    server = cfg.get("server", {})
    assert server.get("address") == "127.0.0.1"
    assert server.get("enableXsrfProtection") is True
    assert isinstance(server.get("maxUploadSize"), int) and 0 < server["maxUploadSize"] <= 1024  # MB
    assert cfg.get("browser", {}).get("gatherUsageStats") is False
    # the CLI launcher binds to localhost too unless told otherwise
    args = cli.build_parser().parse_args(["app"])
    assert args.address == "127.0.0.1"
