"""Deterministic generator of the bad-input corpus (issue 4), written at test time under a tmp folder.

Nothing here is stored in the repository: every file is made from fixed seeds, so the corpus is the same on
every run and tiny (a few KiB per image). Three builders:

- :func:`build_imagefolder` — an ImageFolder tree ``root/<class>/...`` with good images for three classes plus
  one file per *image case* (zero-byte, truncated JPEG/PNG, text named .jpg, CMYK, 16-bit, palette/LA/RGBA,
  EXIF-rotated, 1×1, 20000×1, decompression bomb, symlink loops, non-UTF-8 / unicode names, ...). Returns the
  root and the list of :class:`Case` with what the scan must do with each.
- :func:`write_table_cases` — CSV/TSV/Parquet tables exercising the table loader (missing/extra columns, BOM,
  semicolons, quoted commas, empty rows, duplicates, unknown labels, absolute and ``../`` paths, ...).
- :func:`good_image` / :func:`write_good_images` — the plain images both use.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, features

CLASSES = ("bird", "cat", "dog")
#: per-class base colour of the good images, so the classes are separable by pixels
CLASS_COLORS = {"bird": (200, 60, 40), "cat": (40, 180, 60), "dog": (50, 70, 210)}


@dataclass
class Case:
    """One corpus entry.

    ``rel``: path relative to the root (``bytes`` for a non-UTF-8 name). ``usable``: True when the sample must be
    scored, False when it must be reported as a problem with ``status`` (None: any non-ok status) and a reason
    that contains ``why`` (case-insensitive) and the file's name. ``in_samples``: False for entries that are not
    samples at all (a symlink loop folder): they must instead appear in the dataset notes.
    """

    name: str
    rel: str | bytes
    usable: bool
    status: str | None = None
    why: str = ""
    in_samples: bool = True
    label: str = ""
    note: str = ""

    @property
    def rel_str(self) -> str:
        return os.fsdecode(self.rel) if isinstance(self.rel, bytes) else self.rel

    @property
    def basename(self) -> str:
        return Path(self.rel_str).name


@dataclass
class Corpus:
    root: Path
    cases: list[Case] = field(default_factory=list)
    good: list[str] = field(default_factory=list)  # relative paths of the plain good images

    def case(self, name: str) -> Case:
        return next(c for c in self.cases if c.name == name)


# ---------------------------------------------------------------------------------------------- images
def good_image(label: str, i: int, size: int = 16) -> Image.Image:
    """A small RGB image of class ``label``: the class colour plus seeded noise (distinct per ``i``)."""
    rng = np.random.RandomState(1000 * CLASSES.index(label) + i if label in CLASSES else i)
    base = np.array(CLASS_COLORS.get(label, (128, 128, 128)), dtype=np.float64)
    arr = base + rng.normal(0, 25, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def write_good_images(folder: Path, label: str, n: int, start: int = 0, ext: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"{label}_{i:03d}{ext}"
        good_image(label, i).save(p)
        out.append(p)
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw: bytes | None) -> bytes:
    """A PNG written by hand: IHDR as given; ``raw`` = filtered scanlines (None: a tiny IDAT that does not cover
    the image, used for the decompression-bomb file whose header alone declares the size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(raw if raw is not None else b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png16_rgb(width: int = 12, height: int = 10) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    rng = np.random.RandomState(16)
    px = rng.randint(0, 65536, size=(height, width, 3)).astype(">u2")
    rows = b"".join(b"\0" + px[r].tobytes() for r in range(height))
    return png_bytes(width, height, 16, 2, rows)


def png16_gray(width: int = 16, height: int = 16) -> bytes:
    """A 16-bit grayscale PNG with values spread over the full 0..65535 range (opens as mode I;16)."""
    px = (np.arange(width * height, dtype=np.uint32).reshape(height, width) * 65535 // (width * height - 1))
    px = px.astype(">u2")
    rows = b"".join(b"\0" + px[r].tobytes() for r in range(height))
    return png_bytes(width, height, 16, 0, rows)


def exif_rotated_pair() -> tuple[bytes, Image.Image]:
    """(JPEG bytes stored rotated with EXIF Orientation=6, the upright image it must decode to).

    Upright: 48 wide × 24 tall, left third red, the rest blue. Stored: rotated 90° counter-clockwise (24×48),
    Orientation 6 tells viewers to rotate it 90° clockwise back.
    """
    up = np.zeros((24, 48, 3), dtype=np.uint8)
    up[:, :16] = (230, 20, 20)
    up[:, 16:] = (20, 20, 230)
    upright = Image.fromarray(up, "RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue(), upright


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(root: Path, rel: str | bytes, data: bytes) -> None:
    p = os.path.join(os.fsencode(root), rel) if isinstance(rel, bytes) else str(root / rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)


def image_cases() -> list[tuple[Case, bytes | None]]:
    """(case, file content) for every single-file image case; content None = made specially (links)."""
    noise = good_image("cat", 99, 64)
    jpeg = _save(noise, "JPEG", quality=90)
    png = _save(noise, "PNG")
    exif_jpeg, _ = exif_rotated_pair()
    gray = good_image("dog", 98).convert("L")
    pal_t = good_image("bird", 97).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal_t.info["transparency"] = 0
    la = Image.merge("LA", (gray, Image.linear_gradient("L").resize(gray.size)))
    rgba = good_image("cat", 96).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    mono = good_image("dog", 95).convert("1")
    frames = [good_image("bird", 90 + k) for k in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50)
    C = Case
    optional = []
    if features.check("avif"):  # Pillow reads AVIF: it must be scored, not reported "unsupported" (issue 9)
        optional.append((C("avif", "cat/photo.avif", True), _save(good_image("cat", 88), "AVIF", quality=90)))
    return optional + [
        (C("zero_byte", "cat/zero_byte.jpg", False, "unreadable", "empty file"), b""),
        (C("truncated_jpeg", "cat/truncated.jpg", False, "unreadable", "truncated"), jpeg[: len(jpeg) * 6 // 10]),
        (C("truncated_png", "dog/truncated.png", False, "unreadable", "cannot decode"), png[: len(png) * 6 // 10]),
        (C("text_named_jpg", "bird/notes.jpg", False, "unreadable", "cannot identify"),
         b"this is a text file, not a JPEG\n" * 4),
        (C("html_named_png", "dog/page.png", False, "unreadable", "cannot"), b"<html><body>404</body></html>\n"),
        (C("unsupported_svg", "cat/vector.svg", False, "unsupported", "unsupported file type '.svg'"),
         b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'),
        (C("unsupported_heic", "dog/phone.heic", False, "unsupported", "unsupported file type '.heic'"),
         b"\0\0\0\x18ftypheic\0\0\0\0heicmif1"),
        (C("unsupported_txt", "bird/readme.txt", False, "unsupported", "unsupported file type '.txt'"),
         b"labels are hard\n"),
        (C("no_extension", "bird/LICENSE", False, "unsupported", "unsupported file type"), b"MIT\n"),
        (C("decompression_bomb", "cat/bomb.png", False, "unreadable", "decompression"),
         png_bytes(120_000, 120_000, 8, 2, None)),
        (C("cmyk_jpeg", "cat/cmyk.jpg", True), _save(good_image("cat", 94).convert("CMYK"), "JPEG", quality=90)),
        (C("png16_gray", "dog/gray16.png", True), png16_gray()),
        (C("png16_rgb", "dog/rgb16.png", True), png16_rgb()),
        (C("palette_transparency", "bird/palette.png", True), _save(pal_t, "PNG")),
        (C("la_transparency", "dog/la.png", True), _save(la, "PNG")),
        (C("rgba_transparency", "cat/rgba.png", True), _save(rgba, "PNG")),
        (C("exif_rotated_jpeg", "bird/exif_rotated.jpg", True), exif_jpeg),
        (C("grayscale", "dog/gray.png", True), _save(gray, "PNG")),
        (C("one_bit", "dog/mono.bmp", True), _save(mono, "BMP")),
        (C("one_by_one", "cat/pixel.png", True), _save(Image.new("RGB", (1, 1), (10, 200, 10)), "PNG")),
        (C("very_wide", "bird/wide.png", True), _save(Image.new("RGB", (20000, 1), (210, 50, 30)), "PNG")),
        (C("very_tall", "cat/tall.png", True), _save(Image.new("RGB", (1, 20000), (30, 190, 50)), "PNG")),
        (C("animated_gif", "bird/anim.gif", True), gif.getvalue()),
        (C("png_named_jpg", "cat/really_png.jpg", True), _save(good_image("cat", 93), "PNG")),
        (C("upper_case_ext", "dog/UPPER.JPEG", True), _save(good_image("dog", 92), "JPEG", quality=90)),
        (C("unicode_name", "cat/chat_été_猫.png", True), _save(good_image("cat", 91), "PNG")),
        (C("non_utf8_name", b"dog/bad_\xff\xfe_name.png", False, "invalid_name", "not valid utf-8"),
         _save(good_image("dog", 90), "PNG")),
    ]


def build_imagefolder(root: Path, n_good: int = 10, with_links: bool = True) -> Corpus:
    """Write the ImageFolder corpus under ``root`` (created); see the module doc."""
    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root=root)
    for label in CLASSES:
        for p in write_good_images(root / label, label, n_good):
            corpus.good.append(p.relative_to(root).as_posix())
    for case, data in image_cases():
        _write(root, case.rel, data)
        case.label = case.rel_str.split("/")[0]
        corpus.cases.append(case)
    if with_links:
        # a folder symlink pointing at its own folder, and one pointing back at the dataset root
        os.symlink(".", root / "cat" / "loop")
        corpus.cases.append(Case("symlink_loop_self", "cat/loop", False, why="symlink loop", in_samples=False,
                                 label="cat"))
        os.symlink("..", root / "dog" / "up")
        corpus.cases.append(Case("symlink_to_root", "dog/up", False, why="symlink loop", in_samples=False,
                                 label="dog"))
        # a file symlink to itself (ELOOP on open) and a dangling one
        os.symlink("self_link.png", root / "bird" / "self_link.png")
        corpus.cases.append(Case("symlink_file_loop", "bird/self_link.png", False, "unreadable",
                                 "symbolic links", label="bird"))
        os.symlink("does_not_exist.png", root / "cat" / "dangling.png")
        corpus.cases.append(Case("dangling_symlink", "cat/dangling.png", False, "missing", "not found",
                                 label="cat"))
        # issue 9: links that lead out of the dataset root are refused like table paths (--allow-outside-root)
        outside = root.parent / f"{root.name}_outside"
        write_good_images(outside, "bird", 2, start=70)
        os.symlink(outside / "bird_070.png", root / "bird" / "outside_link.png")
        corpus.cases.append(Case("symlink_file_outside_root", "bird/outside_link.png", False, "outside_root",
                                 "outside the dataset root", label="bird"))
        os.symlink(outside, root / "cat" / "outside_dir")
        corpus.cases.append(Case("symlink_dir_outside_root", "cat/outside_dir", False, why="outside the dataset root",
                                 in_samples=False, label="cat"))
    # a stray file at the top level is not a sample but is reported
    (root / "stray.png").write_bytes(_save(good_image("cat", 89), "PNG"))
    corpus.cases.append(Case("top_level_file", "stray.png", False, why="top level", in_samples=False))
    # hidden files and folders are skipped and counted in one note (issue 9)
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_good_images(root / "dog" / ".thumbnails", "dog", 1, start=80)
    corpus.cases.append(Case("hidden_entries", ".", False, why="2 hidden file(s) or folder(s)", in_samples=False))
    # a clipcleaner workspace and an ImageFolder export inside the dataset root are not classes or samples
    ws = root / "ws"
    write_good_images(ws / "cache" / "thumbs", "cat", 3, start=60)
    (ws / "workspace.json").write_text('{"clipcleaner_version": "0.1.0", "classes": ["cat"]}', encoding="utf-8")
    corpus.cases.append(Case("workspace_inside_root", "ws", False, why="clipcleaner workspace", in_samples=False))
    old = root / "dog" / "old_export"
    write_good_images(old / "dog", "dog", 2, start=65)
    (old / ".clipcleaner-imagefolder.json").write_text(
        '{"format": "clipcleaner-imagefolder", "entries": ["dog", "dog/dog_065.png", "dog/dog_066.png"]}',
        encoding="utf-8")
    corpus.cases.append(Case("export_inside_root", "dog/old_export", False, why="clipcleaner imagefolder export",
                             in_samples=False, label="dog"))
    return corpus


def add_bad_fraction(root: Path, n_good_per_class: int, fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """A clean ImageFolder with ``fraction`` of its files broken (cycling through the unreadable cases).

    Returns (relative paths of good images, relative paths of bad files)."""
    good: list[str] = []
    for label in CLASSES:
        good += [p.relative_to(root).as_posix() for p in write_good_images(root / label, label, n_good_per_class)]
    n_bad = int(round(fraction * len(good) / (1 - fraction)))
    makers = [c for c, d in image_cases() if not c.usable and c.status == "unreadable"]
    contents = {c.name: d for c, d in image_cases()}
    bad: list[str] = []
    for j in range(n_bad):
        c = makers[j % len(makers)]
        label = CLASSES[j % len(CLASSES)]
        rel = f"{label}/bad_{j:03d}_{Path(c.rel_str).name}"
        _write(root, rel, contents[c.name])
        bad.append(rel)
    return good, bad


# ---------------------------------------------------------------------------------------------- tables
@dataclass
class TableCase:
    """A table file and what loading it must give.

    ``error``: substring of the :class:`DatasetError` message when loading must fail (the file name is always
    checked too). Otherwise ``statuses`` maps a path as written in the table to the status of its first row,
    and ``counts`` (optional) gives the expected number of rows per status. ``kwargs``: extra arguments for
    ``load_dataset`` (``classes_file``); ``classes``: the expected class list.
    """

    name: str
    file: Path
    error: str | None = None
    statuses: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] | None = None
    kwargs: dict = field(default_factory=dict)
    classes: list[str] | None = None
    note: str | None = None  # a substring one of the dataset's notes must hold ("" = no note at all)


def write_table_cases(root: Path) -> list[TableCase]:
    """Write a few good images under ``root/img`` and one table per case under ``root``; returns the cases."""
    img = root / "img"
    for label in CLASSES:
        write_good_images(img, label, 4)
    outside = root.parent / f"{root.name}_outside"
    outside.mkdir(exist_ok=True)
    good_image("cat", 50).save(outside / "elsewhere.png")
    (root / "classes.txt").write_text("bird\ncat\n", encoding="utf-8")
    (root / "classes3.txt").write_text("bird\ncat\ndog\nfish\n", encoding="utf-8")
    (root / "classes_na.txt").write_text("NA\nbird\n", encoding="utf-8")
    a, b, c = "img/bird_000.png", "img/cat_000.png", "img/dog_000.png"
    cases: list[TableCase] = []

    def w(name: str, text: str | bytes, **kw) -> TableCase:
        p = root / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        tc = TableCase(name=name, file=p, **kw)
        cases.append(tc)
        return tc

    w("missing_label_col.csv", f"path,notes\n{a},x\n", error="missing column(s) label")
    w("missing_path_col.csv", f"file_name_typo,label\n{a},bird\n", error="missing column(s) path")
    w("zero_byte.csv", b"", error="empty")
    w("header_only.csv", "path,label\n", counts={})
    w("extra_cols.csv", f"id,path,label,split,score\n1,{a},bird,train,0.5\n2,{b},cat,val,0.7\n",
      statuses={a: "ok", b: "ok"})
    w("bom.csv", "\ufeffpath,label\n" + f"{a},bird\n{b},cat\n", statuses={a: "ok", b: "ok"})
    w("semicolons.csv", f"path;label\n{a};bird\n{b};cat\n{c};dog\n", statuses={a: "ok", b: "ok", c: "ok"})
    w("tabs.tsv", f"path\tlabel\n{a}\tbird\n{b}\tcat\n", statuses={a: "ok", b: "ok"})
    # a file whose name contains a comma, quoted in the table
    good_image("dog", 51).save(img / "dog, the good boy.png")
    w("quoted_commas.csv", f'path,label\n"img/dog, the good boy.png","dog"\n{a},"bird"\n',
      statuses={"img/dog, the good boy.png": "ok", a: "ok"})
    w("empty_rows.csv", f"path,label\n\n{a},bird\n,\n\n{b},cat\n  ,  \n", statuses={a: "ok", b: "ok"}, counts={"ok": 2})
    w("crlf.csv", f"path,label\r\n{a},bird\r\n{b},cat\r\n", statuses={a: "ok", b: "ok"})
    w("duplicates.csv", f"path,label\n{a},bird\n{b},cat\n{a},bird\n./{a},bird\n",
      statuses={a: "ok", b: "ok"}, counts={"ok": 2, "duplicate": 2})
    w("duplicates_conflicting.csv", f"path,label\n{a},bird\n{b},cat\n{a},cat\n./{a},bird\n",
      statuses={a: "conflicting_label", b: "ok"}, counts={"ok": 1, "conflicting_label": 1, "duplicate": 2})
    w("label_not_in_classes.csv", f"path,label\n{a},bird\n{b},cat\n{c},dog\n",
      statuses={a: "ok", b: "ok", c: "unknown_label"}, kwargs={"classes_file": root / "classes.txt"})
    w("absolute_inside.csv", f"path,label\n{(root / a).resolve()},bird\n{b},cat\n",
      statuses={str((root / a).resolve()): "ok", b: "ok"})
    w("absolute_outside.csv", f"path,label\n{(outside / 'elsewhere.png').resolve()},cat\n{a},bird\n",
      statuses={str((outside / 'elsewhere.png').resolve()): "outside_root", a: "ok"})
    w("dotdot_escape.csv", f"path,label\n../{outside.name}/elsewhere.png,cat\n{a},bird\n",
      statuses={f"../{outside.name}/elsewhere.png": "outside_root", a: "ok"})
    w("dotdot_inside.csv", f"path,label\nimg/../{a},bird\n", statuses={f"img/../{a}": "ok"})
    w("missing_files.csv", f"path,label\nimg/nope.png,cat\n{a},bird\n", statuses={"img/nope.png": "missing", a: "ok"})
    w("empty_label.csv", f"path,label\n{a},\n{b},cat\n", statuses={a: "empty_label", b: "ok"})
    w("unicode_labels.csv", f"path,label\n{a},oiseau é\n{b},猫\n", statuses={a: "ok", b: "ok"})
    w("latin1.csv", b"path,label\n" + f"{a},caf\xe9\n".encode("latin-1"), statuses={a: "ok"})
    w("single_class.csv", "path,label\n" + "".join(f"img/cat_{i:03d}.png,cat\n" for i in range(4)),
      classes=["cat"])
    w("class_with_one_image.csv", "path,label\n" + "".join(f"img/cat_{i:03d}.png,cat\n" for i in range(4))
      + "".join(f"img/dog_{i:03d}.png,dog\n" for i in range(4)) + f"{a},bird\n", classes=["bird", "cat", "dog"])
    w("empty_class_in_classes_file.csv", "path,label\n" + "".join(f"img/cat_{i:03d}.png,cat\n" for i in range(4))
      + "".join(f"img/dog_{i:03d}.png,dog\n" for i in range(4)), kwargs={"classes_file": root / "classes3.txt"},
      classes=["bird", "cat", "dog", "fish"])
    w("windows_separators.csv", "path,label\r\nimg\\bird_000.png,bird\r\n.\\img\\cat_000.png,cat\r\n",
      statuses={a: "ok", b: "ok"}, counts={"ok": 2})
    w("directory_as_path.csv", "path,label\nimg,cat\n" + f"{a},bird\n", statuses={"img": "unreadable", a: "ok"})
    w("ragged_row.csv", f"path,label\nimg/dog, the good boy.png,dog\n{a},bird\n",
      statuses={a: "ok"}, counts={"ok": 1, "invalid_row": 1})
    w("multiline_quoted.csv", f'path,label\n"img/multi\nline.png",cat\n{b},cat\n',
      statuses={"img/multi\nline.png": "missing", b: "ok"})
    w("binary_named_csv.csv", (img / "bird_000.png").read_bytes(), error="not a text table")
    w("garbage_text.csv", "\u00e9\u00e8 ; | \t random words\nmore, words here\n", error="missing column(s)")
    # issue 9: labels that look alike, missing-value markers, a huge cell, a label over two lines
    w("missing_value_labels.csv", f"path,label\n{a},nan\n{b},None\n{c},NA\nimg/cat_001.png,cat\n",
      statuses={a: "empty_label", b: "empty_label", c: "empty_label", "img/cat_001.png": "ok"}, classes=["cat"])
    w("missing_value_label_in_classes.csv", f"path,label\n{a},NA\n{b},bird\n",
      statuses={a: "ok", b: "ok"}, kwargs={"classes_file": root / "classes_na.txt"}, classes=["NA", "bird"])
    w("numeric_spellings.csv", f"path,label\n{a},0\n{b},00\n{c},0.0\n", statuses={a: "ok", b: "ok", c: "ok"},
      classes=["0", "00", "0.0"], note="one number written 3 ways")
    w("nfc_nfd_labels.csv", f"path,label\n{a},caf\u00e9\n{b},cafe\u0301\n", statuses={a: "ok", b: "ok"},
      classes=["caf\u00e9"], note="normalised (NFC)")
    w("superscript_labels.csv", f"path,label\n{a},\u00b2\n{b},1\u00b2\n{c},x10\nimg/cat_001.png,x9\n",
      statuses={a: "ok", b: "ok", c: "ok"}, classes=["1\u00b2", "x9", "x10", "\u00b2"])
    w("huge_cell.csv", f"path,label\n{a},bird\n{'x' * 200_000}.png,cat\n{b},cat\n", statuses={a: "ok", b: "ok"},
      counts={"ok": 2, "invalid_row": 1})
    w("multiline_label.csv", f'path,label\n{a},"cat\ndog"\n{b},cat\n', statuses={a: "invalid_label", b: "ok"},
      classes=["cat"])
    pq = root / "labels.parquet"
    pd.DataFrame({"image": [a, b, None], "target": [0, 1, 1]}).to_parquet(pq)
    cases.append(TableCase(name="labels.parquet", file=pq, statuses={a: "ok", b: "ok"},
                           counts={"ok": 2, "missing": 1}, classes=["0", "1"]))
    # issue 9: a null in a nullable Parquet column is an empty label, not the class "<NA>"
    for name, labels, classes in (("nullable_int.parquet", pd.array([0, 1, None], dtype="Int64"), ["0", "1"]),
                                  ("nullable_string.parquet", pd.array(["bird", None, "dog"], dtype="string"),
                                   ["bird", "dog"]),
                                  ("nullable_bool.parquet", pd.array([True, False, None], dtype="boolean"),
                                   ["False", "True"])):
        pq = root / name
        pd.DataFrame({"path": pd.array([a, b, c], dtype="string"), "label": labels}).to_parquet(pq)
        nulls = {p: "empty_label" for p, v in zip((a, b, c), labels) if pd.isna(v)}
        cases.append(TableCase(name=name, file=pq, statuses={**{p: "ok" for p in (a, b, c)}, **nulls},
                               counts={"ok": 2, "empty_label": 1}, classes=classes))
    return cases


#: names of the cases :func:`write_table_cases` writes (for test parametrisation before the files exist)
TABLE_CASE_NAMES = [
    "missing_label_col.csv", "missing_path_col.csv", "zero_byte.csv", "header_only.csv", "extra_cols.csv",
    "bom.csv", "semicolons.csv", "tabs.tsv", "quoted_commas.csv", "empty_rows.csv", "crlf.csv", "duplicates.csv",
    "duplicates_conflicting.csv",
    "label_not_in_classes.csv", "absolute_inside.csv", "absolute_outside.csv", "dotdot_escape.csv",
    "dotdot_inside.csv", "missing_files.csv", "empty_label.csv", "unicode_labels.csv", "latin1.csv",
    "single_class.csv", "class_with_one_image.csv", "empty_class_in_classes_file.csv", "windows_separators.csv",
    "directory_as_path.csv",
    "ragged_row.csv", "multiline_quoted.csv", "binary_named_csv.csv", "garbage_text.csv",
    "missing_value_labels.csv", "missing_value_label_in_classes.csv", "numeric_spellings.csv", "nfc_nfd_labels.csv",
    "superscript_labels.csv", "huge_cell.csv", "multiline_label.csv", "labels.parquet", "nullable_int.parquet",
    "nullable_string.parquet", "nullable_bool.parquet",
]
