"""The workspace folder of one dataset: where every stage reads and writes (see docs/ARCHITECTURE.md).

Files: ``workspace.json`` (settings of the last scan), ``dataset.parquet`` (every sample with its status),
``embeddings.npy`` (float16 (N, D) memmap, rows aligned with ``scores.parquet``), ``scores.parquet``,
``probs_<source>.npy`` (float16 (N, K)), ``neighbors.npy`` (int32 (N, k)), ``class_similarity.npy`` (K, K),
``text_features.npy`` + ``prompts.json`` (CLIP only), ``review.sqlite`` (decisions), ``exports/``, ``cache/``.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SETTINGS = "workspace.json"


class WorkspaceError(RuntimeError):
    """The folder is not a (complete) workspace; the message says what is missing."""


def current_umask() -> int:
    """This process's umask, read without changing it (``/proc``); elsewhere via ``os.umask`` under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


_UMASK_LOCK = threading.Lock()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename: readers never see half a file.
    The file gets the mode a plain ``open()`` would give it (0666 minus the umask), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a full disk names the file it could not write
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class Workspace:
    """Paths and readers/writers of one workspace folder (created on first write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # paths ------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def settings_path(self) -> Path:
        return self.path / SETTINGS

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.parquet"

    @property
    def dataset_path(self) -> Path:
        return self.path / "dataset.parquet"

    @property
    def embeddings_path(self) -> Path:
        return self.path / "embeddings.npy"

    @property
    def review_db(self) -> Path:
        return self.path / "review.sqlite"

    @property
    def exports_dir(self) -> Path:
        return self.path / "exports"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def exists(self) -> bool:
        """True when a finished scan is here (settings + scores)."""
        return self.settings_path.is_file() and self.scores_path.is_file()

    def require(self) -> "Workspace":
        if not self.exists():
            raise WorkspaceError(f"{self.path}: not a scanned workspace (no {SETTINGS} / scores.parquet); "
                                 f"run `clipcleaner scan DATA --workspace {self.path}` first")
        return self

    # readers --------------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        self.require()
        return json.loads(self.settings_path.read_text(encoding="utf-8"))

    def scores(self) -> pd.DataFrame:
        self.require()
        return pd.read_parquet(self.scores_path)

    def dataset(self) -> pd.DataFrame:
        return pd.read_parquet(self.dataset_path)

    def embeddings(self) -> np.ndarray:
        """(N, D) float16 memmap, rows aligned with :meth:`scores`."""
        return np.load(self.embeddings_path, mmap_mode="r")

    def array(self, name: str) -> np.ndarray | None:
        p = self.path / f"{name}.npy"
        return np.load(p, mmap_mode="r") if p.is_file() else None

    def classes(self) -> list[str]:
        return list(self.settings()["classes"])

    # writers ----------------------------------------------------------------------------------------------
    def write_settings(self, settings: dict) -> None:
        atomic_write_text(self.settings_path, json.dumps(settings, indent=2, default=_json_default))

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self.path / name, buf.getvalue())

    def write_array(self, name: str, arr: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(self.path / f"{name}.npy", buf.getvalue())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
