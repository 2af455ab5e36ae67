"""Small WebDataset tar shards and Hugging Face-style Parquet shards built from the digits demo, for the format
tests (tarfile and pyarrow only). Each builder returns what the scan must find: the good samples (display path,
source image file, label) in scan order and the bad ones (display path → a phrase of the expected reason)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pandas as pd

N_GOOD = 40


def demo_rows(demo_dir: Path, n: int = N_GOOD) -> tuple[pd.DataFrame, list[str]]:
    """The first ``n`` demo samples (path relative to the demo folder, label) and the class names."""
    df = pd.read_csv(demo_dir / "labels.csv").iloc[:n].reset_index(drop=True)
    classes = (demo_dir / "classes.txt").read_text().split()
    return df, classes


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 1_700_000_000
    tf.addfile(ti, io.BytesIO(data))


def write_webdataset(demo_dir: Path, out: Path) -> dict:
    """``out/shard-00000.tar`` (20 samples, ``.cls`` labels), ``out/shard-00001.tar`` (20 samples with ``.cls``,
    ``.json`` and ``.txt`` labels, then broken members), ``out/shard-00002.tar`` (truncated inside a member)."""
    df, classes = demo_rows(demo_dir, N_GOOD + 4)
    out.mkdir(parents=True, exist_ok=True)
    good, bad = [], {}
    img = [(demo_dir / p).read_bytes() for p in df["path"]]
    with tarfile.open(out / "shard-00000.tar", "w") as tf:
        for i in range(20):
            add_member(tf, f"{i:06d}.png", img[i])
            add_member(tf, f"{i:06d}.cls", str(classes.index(df.label[i])).encode())
            good.append((f"shard-00000.tar/{i:06d}", demo_dir / df.path[i], df.label[i]))
    with tarfile.open(out / "shard-00001.tar", "w") as tf:
        for i in range(20, 40):
            add_member(tf, f"{i:06d}.png", img[i])
            if i < 30:
                add_member(tf, f"{i:06d}.cls", str(classes.index(df.label[i])).encode())
            elif i < 35:
                add_member(tf, f"{i:06d}.json", json.dumps({"caption": "x", "Label": df.label[i]}).encode())
            else:
                add_member(tf, f"{i:06d}.txt", f"{df.label[i]}\n".encode())
            good.append((f"shard-00001.tar/{i:06d}", demo_dir / df.path[i], df.label[i]))
        add_member(tf, "bad-bytes.png", b"this is not a png")
        add_member(tf, "bad-bytes.cls", b"1")
        bad["shard-00001.tar/bad-bytes"] = "cannot decode image"
        add_member(tf, "no-label.png", img[0])
        bad["shard-00001.tar/no-label"] = "has no label member"
        add_member(tf, "no-image.cls", b"2")
        bad["shard-00001.tar/no-image"] = "no image member"
        add_member(tf, "bad-json.png", img[1])
        add_member(tf, "bad-json.json", b"{not json")
        bad["shard-00001.tar/bad-json"] = "not valid JSON"
        add_member(tf, "big-class.png", img[2])
        add_member(tf, "big-class.cls", b"10")
        bad["shard-00001.tar/big-class"] = "class number 10"
        add_member(tf, "empty.png", b"")
        add_member(tf, "empty.cls", b"3")
        bad["shard-00001.tar/empty"] = "empty (0 bytes)"
    # a shard cut off inside its 4th image: its first three samples are good, the 4th is reported
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(4):
            add_member(tf, f"t{i:02d}.png", img[N_GOOD + i])
            add_member(tf, f"t{i:02d}.cls", str(classes.index(df.label[N_GOOD + i])).encode())
    data = buf.getvalue()
    cut = _member_offset(data, "t03.png") + 100
    (out / "shard-00002.tar").write_bytes(data[:cut])
    good += [(f"shard-00002.tar/t{i:02d}", demo_dir / df.path[N_GOOD + i], df.label[N_GOOD + i]) for i in range(3)]
    bad["shard-00002.tar/t03"] = "cut off"
    bad["shard-00002.tar"] = "damaged or truncated tar"
    return {"good": good, "bad": bad, "classes": classes}


def _member_offset(data: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmember(name).offset_data


def hf_table(rows: list[dict], classes: list[str] | None, image: str = "image", label: str = "label"):
    """A pyarrow table as ``datasets`` writes it: ``image: struct<bytes, path>`` + the label, with the features
    (Image, ClassLabel names) in the ``huggingface`` schema metadata."""
    import pyarrow as pa

    t = pa.Table.from_pylist(rows, schema=pa.schema([
        (image, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        (label, pa.int64() if classes is not None else pa.string())]))
    feats = {image: {"_type": "Image"},
             label: {"names": classes, "_type": "ClassLabel"} if classes is not None else
             {"dtype": "string", "_type": "Value"}}
    return t.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": feats}})})


def write_hf_parquet(demo_dir: Path, out: Path) -> dict:
    """``out/data/train-0000{0,1}-of-00002.parquet`` (the hub layout), 20 + 20 rows in row groups of 8, integer
    labels named by ClassLabel metadata; the second shard ends with a row without bytes, one with bad bytes and
    one labelled -1."""
    import pyarrow.parquet as pq

    df, classes = demo_rows(demo_dir)
    d = out / "data"
    d.mkdir(parents=True, exist_ok=True)
    good, bad = [], {}
    for s in range(2):
        rows = []
        name = f"train-{s:05d}-of-00002.parquet"
        for i in range(20 * s, 20 * s + 20):
            rows.append({"image": {"bytes": (demo_dir / df.path[i]).read_bytes(), "path": Path(df.path[i]).name},
                         "label": classes.index(df.label[i])})
            good.append((f"data/{name}#row={i - 20 * s}", demo_dir / df.path[i], df.label[i]))
        if s == 1:
            rows.append({"image": {"bytes": None, "path": "elsewhere.png"}, "label": 3})
            bad[f"data/{name}#row=20"] = "no image bytes"
            rows.append({"image": {"bytes": b"\x89PNG garbage", "path": "g.png"}, "label": 4})
            bad[f"data/{name}#row=21"] = "cannot decode image"
            rows.append({"image": {"bytes": (demo_dir / df.path[0]).read_bytes(), "path": "u.png"}, "label": -1})
            bad[f"data/{name}#row=22"] = "label -1"
        pq.write_table(hf_table(rows, classes), d / name, row_group_size=8)
    return {"good": good, "bad": bad, "classes": classes}


def write_reference_csv(good: list[tuple], out: Path) -> Path:
    """A ``path,label`` table of the same images in the same order (what the shard scans must reproduce)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": [str(p) for _, p, _ in good], "label": [lab for *_, lab in good]}).to_csv(out, index=False)
    return out
