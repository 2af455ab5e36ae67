"""Nothing lost, nothing injected (issue 9): one regression test per finding of the adversarial review.

Exports never delete what clipcleaner did not create; a review database replaced under a running store is
detected instead of acknowledging; truth files are validated at entry without quoting them; every CSV is
formula-safe; bad input, a full disk, a damaged cache, a read-only workspace and bad settings end in one line
naming the file, never a traceback. (Pages: tests/test_safety_app.py; dataset corpus: tests/_corpus.py.)
"""
from __future__ import annotations

import csv
import ctypes
import errno
import io
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import _corpus
import numpy as np
import pandas as pd
import pytest
from _pg import pg_schema_url

from clipcleaner_core import cli, embeddings, export, guards, pipeline
from clipcleaner_core import workspace as workspace_mod
from clipcleaner_core.config import EncoderConfig
from clipcleaner_core.dataset import DatasetError, class_names_from, load_dataset
from clipcleaner_core.decisions import (
    ReviewStore,
    ReviewStoreError,
    ReviewStoreLostError,
    label_problem,
    open_store,
)
from clipcleaner_core.detectors import ScoreConfig
from clipcleaner_core.evaluate import (
    TruthFileError,
    evaluate_workspace,
    read_truth,
    set_truth_path,
    truth_path,
    validate_truth_file,
)
from clipcleaner_core.workspace import Workspace

PIXELS = EncoderConfig(encoder="pixels")  # no weights needed (not CLIP)

REPO = Path(__file__).resolve().parents[1]
SECRET = "root:$6$Sup3rS3cretHash$abcdefghijklmnop:19000:0:99999:7:::"


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): files by bytes, links by target, folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("clipcleaner ") and ": error: " in lines[0], err
    return lines[0]


@pytest.fixture()
def scanned(tmp_path):
    """A 3-class ImageFolder (6 images each) scanned into ``tmp_path/ws`` with two review decisions."""
    root = tmp_path / "data"
    for label in _corpus.CLASSES:
        _corpus.write_good_images(root / label, label, 6)
    ws = tmp_path / "ws"
    r = pipeline.scan(root, ws, encoder=PIXELS)
    with ReviewStore.for_workspace(ws, reviewer="ana") as store:
        store.record(r.scores["sample_id"].iloc[0], "exclude")
        store.record(r.scores["sample_id"].iloc[1], "relabel", "dog")
    return root, ws, r


# ------------------------------------------------------------------------------------------ 1. export folder
def test_imagefolder_export_refuses_folders_it_did_not_create(scanned, tmp_path, capsys):
    root, ws, r = scanned
    _, table = export.export_csv(ws, tmp_path / "c.csv")
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("four years of work")
    protected = {"thesis": thesis, "ws": ws, "data": root, "class folder": root / "cat", "parent": tmp_path,
                 "cache": ws / "cache", "exports": ws / "exports"}
    (ws / "exports").mkdir(exist_ok=True)
    (ws / "exports" / "keep.txt").write_text("x")
    before = {k: tree(p) for k, p in protected.items() if k != "parent"}
    db_before = (ws / "review.sqlite").read_bytes()
    for what, target in protected.items():
        with pytest.raises(guards.UnsafeTargetError) as ei:
            export.export_imagefolder(ws, table, target, mode="copy")
        msg = str(ei.value)
        assert str(target) in msg and "\n" not in msg, msg
        rc, _, err = run_cli(["export", ws, "--out", tmp_path / f"c-{what}.csv", "--imagefolder", target], capsys)
        assert rc == 2 and str(target) in one_line_error(err)
    assert {k: tree(p) for k, p in protected.items() if k != "parent"} == before  # nothing deleted or added
    assert (ws / "review.sqlite").read_bytes() == db_before
    with ReviewStore.for_workspace(ws) as store:
        assert len(store.current()) == 2
    # a file, and a symbolic link to a folder, are refused as well
    f = tmp_path / "file.txt"
    f.write_text("x")
    link = tmp_path / "link"
    os.symlink(thesis, link)
    for target in (f, link):
        with pytest.raises(guards.UnsafeTargetError):
            export.export_imagefolder(ws, table, target)
    assert f.read_text() == "x" and (thesis / "thesis.txt").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_imagefolder_export_replaces_only_its_own_previous_export(scanned, tmp_path):
    root, ws, r = scanned
    _, table = export.export_csv(ws, tmp_path / "c.csv")
    out = tmp_path / "clean"
    out.mkdir()  # an empty folder may be used
    info = export.export_imagefolder(ws, table, out, mode="link")
    assert info["images"] == len(table)
    marker = json.loads((out / guards.IMAGEFOLDER_MARKER).read_text())
    assert marker["format"] == guards.IMAGEFOLDER_FORMAT and len(marker["entries"]) == len(table) + 3
    # a second export replaces it (a previous clipcleaner export, nothing else in it)
    smaller = table.iloc[:4]
    export.export_imagefolder(ws, smaller, out, mode="copy")
    files = [k for k, v in tree(out).items() if v[0] == "file" and not k.startswith(".")]
    assert len(files) == 4
    # a person's file inside the previous export: refused, the file and the export are kept
    some_class = next(p for p in out.iterdir() if p.is_dir())
    (some_class / "my_notes.txt").write_text("mine")
    snapshot = tree(out)
    with pytest.raises(guards.UnsafeTargetError, match="did not create"):
        export.export_imagefolder(ws, table, out, mode="link")
    assert tree(out) == snapshot
    # a forged marker that does not list a file does not make that file deletable
    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"holiday")
    (other / guards.IMAGEFOLDER_MARKER).write_text(json.dumps({"format": guards.IMAGEFOLDER_FORMAT,
                                                               "entries": []}))
    with pytest.raises(guards.UnsafeTargetError, match="did not create"):
        export.export_imagefolder(ws, table, other)
    assert (other / "photo.jpg").read_bytes() == b"holiday"
    # the app's default place, below the workspace's exports/ folder, is allowed
    info = export.export_imagefolder(ws, table, Workspace(ws).exports_dir / "imagefolder")
    assert info["images"] == len(table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "clean", "data", "other", "ws"]


def test_imagefolder_export_long_and_clashing_labels(scanned, tmp_path, capsys):
    """A 300-character label (ENAMETOOLONG before) and labels that map to the same folder name."""
    root, ws, r = scanned
    long_label = "L" * 150 + "é" * 150  # 450 UTF-8 bytes
    ids = list(r.scores["sample_id"].iloc[2:5])
    with ReviewStore.for_workspace(ws) as store:
        store.record(ids[0], "relabel", long_label)
        store.record(ids[1], "relabel", "a/b")
        store.record(ids[2], "relabel", "a_b")
    dec = export.decisions_frame(Workspace(ws))
    table = export.cleaned_table(r.scores, dec)
    out = tmp_path / "if"
    export.export_imagefolder(ws, table, out, mode="copy")
    names = [p.name for p in out.iterdir() if p.is_dir()]
    assert all(len(n.encode()) <= 255 for n in names)
    assert len(names) == table["label"].nunique()  # 'a/b' and 'a_b' stay two folders
    # through the CLI: one line, no traceback (the label is not a class: the export refuses it)
    rc, _, err = run_cli(["export", ws, "--out", tmp_path / "x.csv", "--imagefolder", tmp_path / "if2"], capsys)
    assert rc == 2 and "not a class" in one_line_error(err)


def test_imagefolder_export_of_a_300_character_class(tmp_path, capsys):
    """ENAMETOOLONG before: a table whose class name is 300 characters exports as an ImageFolder from the CLI."""
    img = tmp_path / "data" / "img"
    _corpus.write_good_images(img, "cat", 3)
    _corpus.write_good_images(img, "dog", 3)
    long_class = "a very long class name " * 13  # 299 characters
    rows = [f"img/cat_{i:03d}.png,{long_class.strip()}" for i in range(3)] + \
           [f"img/dog_{i:03d}.png,dog" for i in range(3)]
    (tmp_path / "data" / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    ws = tmp_path / "ws"
    assert run_cli(["scan", "--encoder", "pixels", tmp_path / "data" / "labels.csv", "-w", ws, "-q"], capsys)[0] == 0
    rc, out, err = run_cli(["export", ws, "--imagefolder", tmp_path / "if"], capsys)
    assert rc == 0, err
    folders = sorted(p.name for p in (tmp_path / "if").iterdir() if p.is_dir())
    assert len(folders) == 2 and all(len(f.encode()) <= 255 for f in folders)
    assert sum(1 for p in (tmp_path / "if").rglob("*.png")) == 6


# ------------------------------------------------------------------------------------------ 2. review DB
def _decided(path: Path) -> set[str]:
    with ReviewStore(path) as s:
        return set(s.current()["sample_id"])


@pytest.mark.parametrize("how", ["delete_wal", "delete_db", "replace_db", "replace_wal", "move_db"])
def test_review_db_removed_or_replaced_is_never_acknowledged(tmp_path, how):
    db = tmp_path / "review.sqlite"
    store = ReviewStore(db, reviewer="app")
    for i in range(5):
        store.record(f"s{i}", "accept")
    wal = Path(f"{db}-wal")
    assert wal.exists()
    if how == "delete_wal":
        wal.unlink()
    elif how == "delete_db":
        db.unlink()
    elif how == "replace_db":
        shutil.copyfile(db, tmp_path / "copy")
        os.replace(tmp_path / "copy", db)
    elif how == "replace_wal":
        shutil.copyfile(wal, tmp_path / "copy")
        os.replace(tmp_path / "copy", wal)
    else:
        os.replace(db, tmp_path / "moved.sqlite")
    with pytest.raises(ReviewStoreLostError) as ei:
        store.record("after", "accept")
    msg = str(ei.value)
    assert str(db) in msg and "NOT saved" in msg and "\n" not in msg
    for call in (lambda: store.record_many(["x", "y"], "exclude"), store.undo, store.current, store.version):
        with pytest.raises(ReviewStoreLostError):  # it stays failed: nothing is acknowledged from now on
            call()
    store.close()
    if db.exists():
        assert "after" not in _decided(db)


def test_review_db_deleted_under_a_writer_process_stops_acknowledging(tmp_path):
    """The issue's scenario with a separate writer process (the app): it acknowledges decisions as fast as it can;
    the -wal is deleted. Before: it kept acknowledging (8 toasts) into a file nobody else reads, and kill -9 lost
    them. Now its next write fails loudly; at most the write already past its check when the file went is
    acknowledged, and the file the CLI opens afterwards is a sound database."""
    db = tmp_path / "review.sqlite"
    code = textwrap.dedent(f"""
        import time
        from clipcleaner_core.decisions import ReviewStore, ReviewStoreLostError
        s = ReviewStore({str(db)!r}, reviewer="app")
        i = 0
        while True:
            try:
                s.record(f"s{{i}}", "accept")
            except ReviewStoreLostError as e:
                print("LOST", time.time(), e, flush=True)
                time.sleep(60)
            print("ACK", time.time(), i, flush=True)
            i += 1
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    acks: list[float] = []
    try:
        while len(acks) < 10:
            line = proc.stdout.readline()
            assert line.startswith("ACK"), line
            acks.append(float(line.split()[1]))
        Path(f"{db}-wal").unlink()
        t_deleted = time.time()
        lost = None
        while lost is None:
            line = proc.stdout.readline()
            assert line, "the writer died instead of reporting the lost file"
            if line.startswith("LOST"):
                lost = line
            else:
                acks.append(float(line.split()[1]))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert "was removed" in lost and str(db) in lost
    late = [t for t in acks if t > t_deleted]
    assert len(late) <= 1 and all(t < t_deleted + 1.0 for t in late), late
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ReviewStore(db) as fresh:  # what the CLI does next: open the file at the path and go on
        fresh.record("next", "accept")
        assert "next" in set(fresh.current()["sample_id"])


def test_postgresql_store_is_unaffected():
    with pg_schema_url("cc_safety") as url:
        with ReviewStore(url, reviewer="pg", classes=["cat", "dog"]) as s:
            s.record("a", "accept")
            s.record("b", "relabel", "dog")
            with pytest.raises(ValueError, match="not a class"):
                s.record("c", "relabel", "cow")
            assert s.path is None and s._identity is None
            assert set(s.current()["sample_id"]) == {"a", "b"}
        with ReviewStore(url, read_only=True) as ro:
            assert len(ro.current()) == 2
            with pytest.raises(ReviewStoreError, match="read-only"):
                ro.record("d", "accept")


def test_garbage_review_database_is_one_line(scanned, tmp_path, capsys):
    root, ws, r = scanned
    db = ws / "review.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database at all " * 100)
    with pytest.raises(ReviewStoreError, match="not a database"):
        ReviewStore(db)
    for args in (["export", ws, "--out", tmp_path / "o.csv"], ["db", "history", ws], ["db", "undo", ws]):
        rc, _, err = run_cli(args, capsys)
        line = one_line_error(err)
        assert rc == 2 and str(db) in line and "not a database" in line


# ------------------------------------------------------------------------------------------ 5. truth file
def test_truth_file_is_validated_at_entry_and_never_echoed(scanned, tmp_path, capsys):
    root, ws, r = scanned
    w = Workspace(ws)
    shadow = tmp_path / "shadow"
    shadow.write_text(SECRET + "\ndaemon:*:19000:0:99999:7:::\n")
    binary = tmp_path / "truth.parquet"
    binary.write_bytes(b"PAR1" + os.urandom(64))
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"path,label\x00" + SECRET.encode())
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header_only = tmp_path / "header.csv"
    header_only.write_text("path,label\n")
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("path,label\n/nowhere/a.png,cat\n")
    cases = {shadow: "no path and label columns", binary: "cannot be read", nul: "not a text table",
             empty: "is empty", header_only: "no row", tmp_path: "is a folder", tmp_path / "nope.csv": "no such",
             elsewhere: "none of its 1 paths"}
    for f, why in cases.items():
        with pytest.raises(TruthFileError) as ei:
            set_truth_path(w, f)
        msg = str(ei.value)
        assert str(f) in msg and why in msg and "\n" not in msg, msg
        assert "Sup3r" not in msg and "root:" not in msg and "daemon" not in msg
        assert not (ws / "truth.json").exists()  # refused, not stored
        rc, out, err = run_cli(["evaluate", ws, "--truth", f], capsys)
        assert rc == 2 and why in one_line_error(err) and "Sup3r" not in err + out
    # a good truth file is kept; when it later turns bad, readers say so in one line
    good = tmp_path / "truth.csv"
    good.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in zip(r.scores["abs_path"],
                                                                            r.scores["label"])))
    set_truth_path(w, good)
    assert truth_path(w) == good
    assert evaluate_workspace(ws, good)["samples"] == len(r.scores)
    good.write_text(SECRET + "\n")
    with pytest.raises(TruthFileError) as ei:
        evaluate_workspace(ws, truth_path(w))
    assert "Sup3r" not in str(ei.value)


def test_truth_file_without_read_permission(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("path,label\na.png,cat\n")
    code = ("import sys\nfrom clipcleaner_core.evaluate import read_truth, TruthFileError\n"
            "try:\n    read_truth(sys.argv[1])\nexcept TruthFileError as e:\n    print(e)\n")
    f.chmod(0)
    try:
        out = _unprivileged([sys.executable, "-c", code, str(f)]).stdout
    finally:
        f.chmod(0o644)
    assert "Permission denied" in out and str(f) in out


# ------------------------------------------------------------------------------------------ 6. one CSV writer
def test_db_history_csv_is_formula_escaped(scanned, capsys):
    root, ws, r = scanned
    sid = r.scores["sample_id"].iloc[3]
    with ReviewStore.for_workspace(ws, reviewer="+reviewer") as store:
        store.record(sid, "accept", note="=1+2")
        store.record(sid, "exclude", note="=HYPERLINK(\"http://x\",\"y\")")
        store.record(sid, "unsure", note="@evil")
        store.record(sid, "accept", note="-2+3")
    rc, out, _ = run_cli(["db", "history", ws, "--csv"], capsys)
    assert rc == 0
    cells = [c for row in csv.reader(io.StringIO(out)) for c in row]
    for c in cells:
        assert not c.startswith(("=", "+", "@", "\t", "\r")) and not (c.startswith("-") and c != "-1"), c
    assert {"'=1+2", "'@evil", "'-2+3", "'+reviewer"} <= set(cells)
    assert "'=HYPERLINK(\"http://x\",\"y\")" in cells
    # plain numbers stay numbers
    assert export.escape_formula("-1") == "-1" and export.escape_formula("+2.5e3") == "+2.5e3"
    assert export.escape_formula("-inf") == "'-inf" and export.escape_formula("-2+3") == "'-2+3"


def test_every_csv_goes_through_the_one_writer():
    """No module writes CSV any other way (pandas to_csv / csv.writer only in csvio.py)."""
    offenders = []
    for p in list((REPO / "clipcleaner_core").glob("*.py")) + list((REPO / "pages").glob("*.py")) + [REPO / "app.py"]:
        text = p.read_text(encoding="utf-8")
        if p.name != "csvio.py" and (".to_csv(" in text or "csv.writer(" in text or "DictWriter(" in text):
            offenders.append(p.name)
    assert offenders == []


# ------------------------------------------------------------------------------------------ 7. odd labels
def test_superscript_digits_do_not_abort_the_sort():
    assert class_names_from(["²", "1²", "img10", "img2", "Cat", "cat", "١"]) == \
        ["1²", "Cat", "cat", "img2", "img10", "²", "١"]


# ------------------------------------------------------------------------------------------ 8. disk full
def test_embedding_write_error_is_named_and_cleaned_up(scanned, monkeypatch):
    root, ws, r = scanned
    out = Workspace(ws).artifact_path("embeddings")
    before = out.read_bytes()

    class FullFile(io.BytesIO):
        def __init__(self, *a, **k):
            super().__init__()
            self.n = 0

        def write(self, b):
            self.n += 1
            if self.n > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

        def fileno(self):
            raise OSError(errno.EBADF, "no fd")

    real_open = open

    def fake_open(path, mode="r", *a, **k):
        if str(path).endswith(".tmp.npy") and "w" in mode:
            real_open(path, mode).close()  # the temp file exists, as it would
            return FullFile()
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    blocks = [np.ones((3, 4), np.float32)] * 3
    with pytest.raises(OSError) as ei:
        embeddings._write_npy(out, (9, 4), iter(blocks))
    monkeypatch.undo()
    assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(out.parent)
    assert out.read_bytes() == before
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]
    # not enough free space is refused before anything is written
    monkeypatch.setattr(embeddings.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 5))
    with pytest.raises(OSError, match="bytes needed"):
        embeddings._write_npy(out, (9, 4), iter(blocks))


def _small_fs_script(size_kib: int, body: str) -> list[str]:
    return ["unshare", "-rm", "sh", "-c", f"mkdir -p /tmp/ccfull && mount -t tmpfs -o size={size_kib}k tmpfs "
            f"/tmp/ccfull && {body}"]


@pytest.mark.slow
@pytest.mark.parametrize("size_kib,where", [(600, "chunk"), (2200, "assemble")])
def test_disk_full_scan_is_one_line_and_leaves_no_temp_file(tmp_path, size_kib, where):
    """A real full disk: the workspace on a small tmpfs (private mount namespace). 300 images of 32x32x3 pixel
    features = 1.8 MB of chunks and 1.8 MB of embeddings: at 600 KiB the chunk write fails, at 2.2 MiB the
    assembly. Before: SIGBUS (exit 135) and a .tmp.npy left behind."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    probe = subprocess.run(_small_fs_script(64, "true"), capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.strip()[-200:]}")
    root = tmp_path / "data"
    for label in _corpus.CLASSES:
        _corpus.write_good_images(root / label, label, 100)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path)}
    cmd = (f"{sys.executable} -m clipcleaner_core.cli scan --encoder pixels {root} "
           f"-w /tmp/ccfull/ws -q --pixel-size 32; "
           f"echo rc=$?; find /tmp/ccfull -name '*.tmp*'; echo listed")
    p = subprocess.run(_small_fs_script(size_kib, cmd), capture_output=True, text=True, env=env, timeout=600)
    assert "rc=2" in p.stdout, (p.stdout, p.stderr[-2000:])
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert err[-1].startswith("clipcleaner scan: error: /tmp/ccfull/ws") and "No space left" in err[-1], err
    assert "Traceback" not in p.stderr
    assert p.stdout.split("rc=2")[1].strip() == "listed"  # no temp file left


# ------------------------------------------------------------------------------------------ 9. damaged cache
@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_ids"])
def test_damaged_embedding_chunk_is_discarded_and_recomputed(scanned, damage, capsys):
    root, ws, r = scanned
    w = Workspace(ws)
    first = np.load(w.artifact_path("embeddings")).copy()
    chunk = next((w.cache_dir).glob("emb-*/chunk-000000.npz"))
    data = chunk.read_bytes()
    if damage == "truncate":
        chunk.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        chunk.write_bytes(b"\0" * 100)
    else:
        with np.load(chunk) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["ids"] = np.array([f"x{i}" for i in range(len(arrays["ids"]))])
        np.savez(chunk, **arrays)
    res = pipeline.scan(root, ws, encoder=PIXELS)
    assert any("discarded and recomputed" in n and chunk.name in n for n in res.settings.notes)
    assert np.array_equal(np.load(w.artifact_path("embeddings")), first)
    rc, out, err = run_cli(["scan", "--encoder", "pixels", root, "-w", ws, "-q"], capsys)
    assert rc == 0 and "Traceback" not in err


# ------------------------------------------------------------------------------------------ 10. read-only workspace
def _unprivileged(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` so that file permissions apply even when the tests run as root (no CAP_DAC_OVERRIDE)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                       preexec_fn=drop if os.geteuid() == 0 else None)
    if p.returncode != 0 and "prctl" in p.stderr:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    return p


def _chmod_tree(root: Path, writable: bool) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for n in filenames:
            os.chmod(Path(dirpath) / n, 0o644 if writable else 0o444)
        os.chmod(dirpath, 0o755 if writable else 0o555)


@pytest.mark.parametrize("journal", ["clean", "wal_and_shm", "wal_only"])
def test_read_only_workspace_exports_elsewhere_and_shows_history(scanned, tmp_path, journal):
    root, ws, r = scanned
    db = ws / "review.sqlite"
    if journal != "clean":  # a writer killed without closing leaves its -wal (and -shm) behind
        code = (f"import os\nfrom clipcleaner_core.decisions import ReviewStore\n"
                f"s = ReviewStore({str(db)!r})\ns.record({r.scores['sample_id'].iloc[5]!r}, 'exclude')\n"
                f"os._exit(0)\n")
        subprocess.run([sys.executable, "-c", code], check=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path)})
        assert Path(f"{db}-wal").stat().st_size > 0
        if journal == "wal_only":
            Path(f"{db}-shm").unlink()
    expected = 3 if journal != "clean" else 2
    out = tmp_path / "out"
    out.mkdir()
    _chmod_tree(ws, writable=False)
    try:
        before = tree(ws)
        ex = _unprivileged([sys.executable, "-m", "clipcleaner_core.cli", "export", str(ws), "--out",
                            str(out / "clean.csv")])
        hist = _unprivileged([sys.executable, "-m", "clipcleaner_core.cli", "db", "history", str(ws), "--csv"])
        after = tree(ws)
    finally:
        _chmod_tree(ws, writable=True)
    assert ex.returncode == 0, ex.stderr
    table = pd.read_csv(out / "clean.csv")
    assert len(table) == len(r.scores) - (expected - 1)  # the excluded samples are dropped
    assert hist.returncode == 0, hist.stderr
    assert len(pd.read_csv(io.StringIO(hist.stdout))) == expected
    assert after == before  # nothing written into the read-only workspace


# ------------------------------------------------------------------------------------------ 12. workspace in root
def test_workspace_inside_the_imagefolder_is_skipped(tmp_path, capsys):
    root = tmp_path / "data"
    for label in _corpus.CLASSES:
        _corpus.write_good_images(root / label, label, 5)
    ws = root / "ws"
    first = pipeline.scan(root, ws, encoder=PIXELS)  # created inside the root by this very scan
    from clipcleaner_core import thumbnails

    thumbnails.ensure_thumbnails(Workspace(ws), list(first.scores["sample_id"]), list(first.scores["abs_path"]))
    second = pipeline.scan(root, ws, encoder=PIXELS)
    for res in (first, second):
        assert list(res.settings.classes) == list(_corpus.CLASSES) and len(res.scores) == 15
    # the first scan creates the folder only when it publishes (after the walk); from then on it is skipped
    assert any("workspace" in n and str(ws) in n for n in second.settings.notes)
    rc, out, _ = run_cli(["scan", "--encoder", "pixels", root, "-w", ws, "-q"], capsys)
    assert rc == 0 and "scored 15 samples" in out and "inside the dataset folder, skipped" in out
    # any other workspace folder inside the root is recognised by its workspace.json
    other = tmp_path / "other_ws"
    pipeline.scan(root, other, encoder=PIXELS)
    shutil.copytree(other, root / "cat" / "copied_ws")
    assert len(pipeline.scan(root, ws, encoder=PIXELS).scores) == 15


# ------------------------------------------------------------------------------------------ 15. where to write
def test_workspace_is_not_created_in_a_folder_of_other_files(tmp_path, capsys):
    root = tmp_path / "data"
    for label in _corpus.CLASSES:
        _corpus.write_good_images(root / label, label, 4)
    ssh = tmp_path / "dot_ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("PRIVATE KEY")
    (ssh / "known_hosts").write_text("github.com ssh-ed25519 AAAA")
    before = tree(ssh)
    assert guards.workspace_folder_problem(ssh) and "id_ed25519" in guards.workspace_folder_problem(ssh)
    for target in (ssh, root):  # a folder of somebody's files, the dataset itself
        rc, _, err = run_cli(["scan", "--encoder", "pixels", root, "-w", target, "-q"], capsys)
        assert rc == 2 and "--force" in one_line_error(err)
    assert tree(ssh) == before
    # new, empty and existing workspace folders are fine; --force overrides
    assert guards.workspace_folder_problem(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert guards.workspace_folder_problem(tmp_path / "empty") is None
    assert run_cli(["scan", "--encoder", "pixels", root, "-w", tmp_path / "ws", "-q"], capsys)[0] == 0
    assert guards.workspace_folder_problem(tmp_path / "ws") is None
    assert run_cli(["scan", "--encoder", "pixels", root, "-w", tmp_path / "ws", "-q"], capsys)[0] == 0
    nx = tmp_path / "nx"
    nx.mkdir()
    (nx / "workspace.json").write_text('{"version": 2, "projects": {}}')  # another tool's workspace.json
    (nx / "package.json").write_text("{}")
    assert guards.workspace_folder_problem(nx) is not None
    assert run_cli(["scan", "--encoder", "pixels", root, "-w", ssh, "-q", "--force"], capsys)[0] == 0


def test_a_folder_without_images_is_not_listed_as_a_dataset(tmp_path):
    etc = tmp_path / "etc"
    for i in range(40):
        (etc / f"conf{i % 7}.d").mkdir(parents=True, exist_ok=True)
        (etc / f"conf{i % 7}.d" / f"file{i}.conf").write_text("secret=1")
        (etc / f"top{i}.conf").write_text("x")
    with pytest.raises(DatasetError) as ei:
        load_dataset(etc)
    msg = str(ei.value)
    assert "no image file" in msg and "file3.conf" not in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------ 16. smaller ones
def test_imagefolder_symlinks_out_of_the_root_follow_allow_outside_root(tmp_path):
    root = tmp_path / "data"
    for label in ("cat", "dog"):
        _corpus.write_good_images(root / label, label, 3)
    outside = tmp_path / "outside"
    _corpus.write_good_images(outside, "cat", 2, start=10)
    os.symlink(outside / "cat_010.png", root / "cat" / "linked.png")
    os.symlink(outside, root / "dog" / "more")
    ds = load_dataset(root)
    assert ds.samples.set_index("path").loc["cat/linked.png", "status"] == "outside_root"
    assert len(ds.ok) == 6 and any("dog/more" in n and "--allow-outside-root" in n for n in ds.notes)
    ds2 = load_dataset(root, allow_outside_root=True)
    assert len(ds2.ok) == 9  # the linked file and the two images of the linked folder
    assert cli.main(["scan", "--encoder", "pixels", str(root), "-w", str(tmp_path / "ws"), "-q",
                     "--allow-outside-root"]) == 0
    assert len(Workspace(tmp_path / "ws").scores()) == 9


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.0])
def test_margin_must_be_a_real_margin(bad, scanned, capsys):
    with pytest.raises(ValueError, match="--margin"):
        ScoreConfig(margin=bad).validate()
    root, ws, r = scanned
    rc, _, err = run_cli(["rescore", ws, "--margin", str(bad)], capsys)
    assert rc == 2 and "--margin" in one_line_error(err)
    for field, value in (("temperature", math.nan), ("folds", 1), ("knn_k", 0), ("theta_gmm", math.nan)):
        with pytest.raises(ValueError):
            ScoreConfig(**{field: value}).validate()


def test_relabel_to_a_non_class_or_multiline_label_is_refused(scanned, tmp_path, capsys):
    root, ws, r = scanned
    sid = r.scores["sample_id"].iloc[4]
    assert label_problem("cat\ndog") and label_problem(" cat") and label_problem("") and label_problem("cat") is None
    with open_store(ws) as store:  # what the app and the CLI use: it knows the workspace's classes
        for bad in ("cow", "cat\ndog", "dog\r", ""):
            with pytest.raises(ValueError):
                store.record(sid, "relabel", bad)
        with pytest.raises(ValueError):
            store.record_many([(sid, "relabel", "cow")])
        store.record(sid, "relabel", "bird")
    with ReviewStore.for_workspace(ws) as store:
        with pytest.raises(ValueError, match="single line"):
            store.record(sid, "relabel", "two\nlines")  # never, even without the class list
    rc, _, err = run_cli(["db", "decide", ws, "relabel", sid, "--label", "cow"], capsys)
    assert rc == 2 and "not a class" in one_line_error(err)
    # a decision that got in anyway (an old database, an import) is not exported
    with ReviewStore.for_workspace(ws) as store:
        store.record(sid, "relabel", "cow")
    with pytest.raises(ValueError, match="not a class"):
        export.export_csv(ws, tmp_path / "x.csv")
    rc, _, err = run_cli(["export", ws, "--out", tmp_path / "x.csv"], capsys)
    assert rc == 2 and sid in one_line_error(err)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_respect_the_umask(scanned, tmp_path, umask):
    root, ws, r = scanned
    old = os.umask(umask)
    try:
        assert workspace_mod.current_umask() == umask
        path, table = export.export_csv(ws)
        rp, _ = export.export_report(ws, table)
        out = tmp_path / f"if{umask:o}"
        export.export_imagefolder(ws, table, out, mode="copy")
        workspace_mod.atomic_write_bytes(ws / "probe.parquet", workspace_mod.table_bytes(table))
    finally:
        os.umask(old)
    want_file, want_dir = 0o666 & ~umask, 0o777 & ~umask
    for p in (path, rp, ws / "probe.parquet", out / guards.IMAGEFOLDER_MARKER):
        assert stat.S_IMODE(p.stat().st_mode) == want_file, p
    assert stat.S_IMODE(out.stat().st_mode) == want_dir
    (ws / "probe.parquet").unlink()


# ------------------------------------------------------------------------------------------ 14. one line each
def test_remaining_tracebacks_are_one_line(scanned, tmp_path, capsys, monkeypatch):
    root, ws, r = scanned
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    for args in (["export", ws, "--out", a_dir], ["export", ws, "--out", tmp_path / "o.csv", "--report", a_dir]):
        rc, _, err = run_cli(args, capsys)
        assert rc == 2 and str(a_dir) in one_line_error(err) and "is a folder" in err
    # a full disk while exporting
    from test_exports_safety import _half_writing_fdopen

    monkeypatch.setattr(workspace_mod.os, "fdopen", _half_writing_fdopen(os.fdopen))
    rc, _, err = run_cli(["export", ws, "--out", tmp_path / "full.csv"], capsys)
    monkeypatch.undo()
    line = one_line_error(err)
    assert rc == 2 and str(tmp_path / "full.csv") in line and "disk is full" in line
    assert not (tmp_path / "full.csv").exists()
    # evaluate on a workspace where nothing could be scored
    bad = tmp_path / "allbad"
    (bad / "cat").mkdir(parents=True)
    (bad / "cat" / "a.png").write_bytes(b"not a png")
    empty_ws = tmp_path / "ws_empty"
    pipeline.scan(bad, empty_ws, encoder=PIXELS)
    truth = tmp_path / "t.csv"
    truth.write_text(f"path,label\n{bad / 'cat' / 'a.png'},cat\n")
    rc, _, err = run_cli(["evaluate", empty_ws, "--truth", truth], capsys)
    assert rc == 2 and "no sample was scored" in one_line_error(err)
    # a folder that is not a workspace
    rc, _, err = run_cli(["export", tmp_path / "nope"], capsys)
    assert rc == 2 and "not a scanned workspace" in one_line_error(err)


def test_read_truth_reads_parquet_and_csv(tmp_path):
    t = tmp_path / "t.parquet"
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["cat", None]}).to_parquet(t)
    assert list(read_truth(t)["path"]) == ["a.png"]
    scores = pd.DataFrame({"abs_path": [str(tmp_path / "a.png")]})
    assert validate_truth_file(t, scores) == t
