"""The workspace folder of one dataset: one consistent, atomically published set of scan results.

Layout (see docs/ARCHITECTURE.md)::

    WS/workspace.json            the manifest: format version, the published generation, typed scan settings
                                 (:class:`Settings`) and every artifact of the set with its file, shape and size
    WS/gen-<id>/                 one scan's tables and arrays (dataset.parquet, scores.parquet, probs_*.npy, …)
    WS/current -> gen-<id>       convenience link for notebooks (readers go through the manifest)
    WS/cache/emb-<key>/          embedding chunks and the assembled embeddings.npy, keyed by content + encoder
    WS/cache/                    layouts, thumbnails, other derived caches
    WS/review.sqlite, review.json  review decisions; which review database the workspace uses
    WS/exports/, truth.json      exports; the ground-truth file the user chose

A scan or rescore writes its whole set into a fresh ``gen-<id>`` folder and publishes it with ONE atomic write of
``workspace.json`` (:meth:`Workspace.publish`); a crash before that leaves the previous set untouched. Readers go
through the manifest and refuse a set that does not match it (a file missing, replaced, of another shape, a table
missing a column) with :class:`WorkspaceError`: one line that says what is wrong and to re-scan.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import ScoreConfig, from_dict

SETTINGS = "workspace.json"
USER_SETTINGS = "review.json"
FORMAT = "clipcleaner-workspace"
VERSION = 2
GEN_PREFIX = "gen-"
GEN_MARKER = ".clipcleaner-generation"
CURRENT_LINK = "current"
KEEP_GENERATIONS = 2
"""Published sets kept on disk: the current one and the one before (a reader that opened it a moment before a
re-scan finishes can still read it); older ``gen-*`` folders are removed when a new set is published."""
LEGACY_FILES = ("dataset.parquet", "scores.parquet", "embeddings.npy", "probs_zs.npy", "probs_probe.npy",
                "probs_knn.npy", "probs_ens.npy", "neighbors.npy", "neighbor_sims.npy", "class_similarity.npy",
                "text_features.npy", "prompts.json")
"""Result files clipcleaner 0.1 wrote into the workspace root; removed when such a workspace is re-scanned."""
REQUIRED_SCORE_COLUMNS = ("sample_id", "path", "abs_path", "label", "label_idx", "suggested_label",
                          "suggested_prob", "noise_score", "flagged", "reasons")
REQUIRED_DATASET_COLUMNS = ("sample_id", "path", "abs_path", "label", "status", "reason")


class WorkspaceError(RuntimeError):
    """The folder is not a (complete, consistent) workspace; the message says what is wrong and what to do."""


# --- atomic files ---------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a full disk names the file it could not write
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2, default=_json_default))


def array_bytes(arr: np.ndarray) -> bytes:
    """``arr`` in ``.npy`` format (for :func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr))
    return buf.getvalue()


def table_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as Parquet (index dropped)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (a lock file) for read-modify-write of the workspace's JSON."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- typed settings -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSource:
    """Where the scanned samples came from."""

    source: str = ""
    root: str = ""
    kind: str = ""
    classes_file: str | None = None
    allow_outside_root: bool = False


@dataclass(frozen=True)
class ZeroShot:
    """Whether zero-shot criteria were available (a CLIP text tower) and, if not, why."""

    available: bool = False
    reason: str = ""
    prompts: int = 0
    descriptions: str | bool = False


@dataclass(frozen=True)
class DetectionInfo:
    """What the scores stage used and found (``detectors.detect`` info)."""

    criteria_used: tuple[str, ...] = ()
    criteria_unavailable: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    suggestion_source: str = ""
    flag_counts: Mapping[str, int] = field(default_factory=dict)
    criterion_rejects: Mapping[str, int] = field(default_factory=dict)
    fallback_added: int = 0
    knn_k: int = 0
    probe_folds: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Further per-scan facts other stages add (issue types, health notes); JSON values."""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DetectionInfo:
        """From ``detectors.detect``'s info or stored JSON: lists become tuples, unknown keys go to ``extra``."""
        known = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k in known},
                   extra={**doc.get("extra", {}), **{k: v for k, v in doc.items() if k not in known | {"extra"}}})


@dataclass(frozen=True)
class Settings:
    """The typed ``settings`` of ``workspace.json``: how the published set was made."""

    classes: tuple[str, ...]
    data: DataSource = DataSource()
    encoder: Mapping[str, Any] = field(default_factory=dict)
    encoder_kind: str = ""
    embedding_key: str = ""
    embedding_engine: str = "local"
    zero_shot: ZeroShot = ZeroShot()
    scoring: ScoreConfig = field(default_factory=ScoreConfig)
    detection: DetectionInfo = DetectionInfo()
    class_similarity_source: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    scanned_at: str = ""
    clipcleaner_version: str = ""

    @property
    def method(self) -> str:
        return self.scoring.method

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, doc: Any, where: str = SETTINGS) -> Settings:
        """Parse and type-check; :class:`WorkspaceError` names the first field that is wrong."""

        def bad(name: str, want: str) -> WorkspaceError:
            return WorkspaceError(f"{where}: setting '{name}' should be {want}; the file is damaged or was edited "
                                  "by hand — re-scan the dataset")

        if not isinstance(doc, dict):
            raise bad("settings", "an object")
        classes = doc.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise bad("classes", "a list of class names")

        def sub(name: str, typ: type):
            v = doc.get(name, {})
            if not isinstance(v, dict):
                raise bad(name, "an object")
            try:
                return typ(**{k: x for k, x in v.items() if k in typ.__dataclass_fields__})
            except (TypeError, ValueError) as e:
                raise bad(name, f"well-formed ({e})") from None

        data = sub("data", DataSource)
        zs = sub("zero_shot", ZeroShot)
        if not isinstance(zs.available, bool):
            raise bad("zero_shot.available", "true or false")
        det_doc = doc.get("detection", {})
        if not isinstance(det_doc, dict):
            raise bad("detection", "an object")
        try:
            det = DetectionInfo.from_dict(det_doc)
        except (TypeError, ValueError) as e:
            raise bad("detection", f"well-formed ({e})") from None
        if not all(isinstance(t, tuple) for t in (det.criteria_used, det.criteria_unavailable, det.sources)):
            raise bad("detection", "lists of criteria and sources")
        try:
            scoring = from_dict(ScoreConfig, doc.get("scoring") if isinstance(doc.get("scoring"), dict) else {})
        except (TypeError, ValueError) as e:
            raise bad("scoring", f"valid scoring settings ({e})") from None
        for name in ("encoder", "counts", "timings", "versions"):
            if not isinstance(doc.get(name, {}), dict):
                raise bad(name, "an object")
        notes = doc.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise bad("notes", "a list of strings")
        for name in ("encoder_kind", "embedding_key", "embedding_engine", "class_similarity_source", "scanned_at",
                     "clipcleaner_version"):
            if not isinstance(doc.get(name, ""), str):
                raise bad(name, "a string")
        return cls(classes=tuple(classes), data=data, encoder=dict(doc.get("encoder", {})),
                   encoder_kind=doc.get("encoder_kind", ""), embedding_key=doc.get("embedding_key", ""),
                   embedding_engine=doc.get("embedding_engine", "local"), zero_shot=zs, scoring=scoring,
                   detection=det, class_similarity_source=doc.get("class_similarity_source", ""),
                   counts=dict(doc.get("counts", {})), notes=tuple(notes), timings=dict(doc.get("timings", {})),
                   versions=dict(doc.get("versions", {})), scanned_at=doc.get("scanned_at", ""),
                   clipcleaner_version=doc.get("clipcleaner_version", ""))


# --- manifest -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """One file of a published set. ``file`` is relative to the workspace; ``rows`` is the row count of a table
    or the first dimension of an array (-1 for JSON); ``aligned``: its rows are the rows of ``scores``."""

    name: str
    file: str
    kind: str  # "table" | "array" | "json"
    rows: int
    shape: tuple[int, ...] = ()
    dtype: str = ""
    bytes: int = 0
    aligned: bool = False


@dataclass(frozen=True)
class Manifest:
    """The parsed ``workspace.json``: which set is published and what it holds."""

    generation: str
    published_at: str
    settings: Settings
    artifacts: Mapping[str, Artifact]

    @property
    def rows(self) -> int:
        """Scored samples (rows of ``scores``)."""
        return self.artifacts["scores"].rows

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "generation": self.generation,
                "published_at": self.published_at, "settings": self.settings.to_dict(),
                "artifacts": {k: {**asdict(a), "shape": list(a.shape)} for k, a in self.artifacts.items()}}


def _parse_manifest(doc: Any, where: str) -> Manifest:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        if isinstance(doc, dict) and "embedding_key" in doc and "classes" in doc:
            raise WorkspaceError(f"{where}: written by clipcleaner 0.1 (results not published as one set); re-scan "
                                 "the dataset into this workspace (cached embeddings and review decisions are kept)")
        raise WorkspaceError(f"{where}: not a clipcleaner workspace manifest")
    if doc.get("version") != VERSION:
        raise WorkspaceError(f"{where}: workspace format version {doc.get('version')!r} is not supported by this "
                             f"clipcleaner (it reads version {VERSION}); re-scan the dataset")
    arts = doc.get("artifacts")
    gen = doc.get("generation")
    if not isinstance(arts, dict) or not isinstance(gen, str) or not gen:
        raise WorkspaceError(f"{where}: the manifest lists no artifacts; re-scan the dataset")
    parsed = {}
    for name, a in arts.items():
        try:
            parsed[name] = Artifact(**{**a, "shape": tuple(int(s) for s in a.get("shape", ()))})
        except (TypeError, ValueError, AttributeError):
            raise WorkspaceError(f"{where}: artifact '{name}' is malformed; re-scan the dataset") from None
    for need in ("scores", "dataset", "embeddings"):
        if need not in parsed:
            raise WorkspaceError(f"{where}: the published set has no '{need}'; re-scan the dataset")
    return Manifest(generation=gen, published_at=str(doc.get("published_at", "")),
                    settings=Settings.from_dict(doc.get("settings"), where), artifacts=parsed)


# --- the workspace ----------------------------------------------------------------------------------------------
class Workspace:
    """Reader and the one writer of a workspace folder (created on first publish)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()
        self._manifest: tuple[tuple, Manifest] | None = None

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # paths -----------------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def settings_path(self) -> Path:
        return self.path / SETTINGS

    @property
    def review_db(self) -> Path:
        return self.path / "review.sqlite"

    @property
    def exports_dir(self) -> Path:
        return self.path / "exports"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def embedding_cache(self, key: str) -> Path:
        """Folder of the embedding run ``key`` (chunks + assembled ``embeddings.npy``)."""
        return self.cache_dir / f"emb-{key}"

    # manifest ----------------------------------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        """The parsed manifest (re-read when ``workspace.json`` changes); WorkspaceError when there is none or it
        is damaged."""
        p = self.settings_path
        try:
            st = p.stat()
        except FileNotFoundError:
            raise WorkspaceError(f"{self.path}: not a scanned workspace (no {SETTINGS}); run `clipcleaner scan DATA "
                                 f"--workspace {self.path}` first") from None
        except OSError as e:
            raise WorkspaceError(f"{p}: cannot read ({e.strerror})") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._manifest is not None and self._manifest[0] == stamp:
            return self._manifest[1]
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise WorkspaceError(f"{p}: cannot read the workspace manifest ({type(e).__name__}); re-scan the "
                                 "dataset") from None
        m = _parse_manifest(doc, str(p))
        self._manifest = (stamp, m)
        return m

    def exists(self) -> bool:
        """True when a published scan is here (the manifest parses)."""
        try:
            self.manifest()
            return True
        except WorkspaceError:
            return False

    def require(self) -> Workspace:
        self.manifest()
        return self

    @property
    def generation(self) -> str:
        """Id of the published set: changes with every scan / rescore (use it to key caches)."""
        return self.manifest().generation

    def settings(self) -> Settings:
        return self.manifest().settings

    def classes(self) -> list[str]:
        return list(self.settings().classes)

    def has(self, name: str) -> bool:
        return name in self.manifest().artifacts

    def artifact_path(self, name: str) -> Path:
        return self.path / self.manifest().artifacts[name].file

    # readers -------------------------------------------------------------------------------------------------------
    def _checked(self, name: str) -> tuple[Artifact, Path]:
        a = self.manifest().artifacts.get(name)
        if a is None:
            raise WorkspaceError(f"{self.path}: the published set has no '{name}'")
        p = self.path / a.file
        try:
            size = p.stat().st_size
        except OSError:
            raise WorkspaceError(f"{p}: missing from the published set (removed?); re-scan the dataset") from None
        if a.bytes and size != a.bytes:
            raise WorkspaceError(f"{p}: {size} bytes, but the manifest recorded {a.bytes} (the file was replaced "
                                 "or truncated); re-scan the dataset")
        return a, p

    def _table(self, name: str, required: tuple[str, ...]) -> pd.DataFrame:
        a, p = self._checked(name)
        try:
            df = pd.read_parquet(p)
        except Exception as e:  # noqa: BLE001 - any unreadable table is one clear line
            raise WorkspaceError(f"{p}: cannot read ({type(e).__name__}); re-scan the dataset") from None
        if len(df) != a.rows:
            raise WorkspaceError(f"{p}: {len(df)} rows, the manifest says {a.rows}; re-scan the dataset")
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise WorkspaceError(f"{p}: missing column(s) {', '.join(missing)}; re-scan the dataset")
        return df

    def scores(self) -> pd.DataFrame:
        """One row per scored sample (see README "Workspace files"); rows index every aligned array."""
        return self._table("scores", REQUIRED_SCORE_COLUMNS)

    def dataset(self) -> pd.DataFrame:
        """Every sample found, usable or not (``status`` "ok" rows are the scored ones, in order)."""
        return self._table("dataset", REQUIRED_DATASET_COLUMNS)

    def array(self, name: str) -> np.ndarray | None:
        """The published array ``name`` (memory-mapped), or None when the set has none of that name."""
        if not self.has(name):
            return None
        a, p = self._checked(name)
        try:
            arr = np.load(p, mmap_mode="r")
        except Exception as e:  # noqa: BLE001
            raise WorkspaceError(f"{p}: cannot read ({type(e).__name__}); re-scan the dataset") from None
        if tuple(arr.shape) != a.shape or (a.dtype and str(arr.dtype) != a.dtype):
            raise WorkspaceError(f"{p}: shape {tuple(arr.shape)} {arr.dtype}, the manifest says {a.shape} {a.dtype}; "
                                 "re-scan the dataset")
        return arr

    def embeddings(self) -> np.ndarray:
        """(N, D) float16 memmap, unit-norm rows aligned with :meth:`scores`."""
        arr = self.array("embeddings")
        assert arr is not None  # the manifest parser requires it
        return arr

    def json_artifact(self, name: str) -> Any | None:
        if not self.has(name):
            return None
        _, p = self._checked(name)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise WorkspaceError(f"{p}: cannot read ({type(e).__name__}); re-scan the dataset") from None

    def probs(self, src: str):
        """Class probabilities of source ``src`` (:mod:`registry` SOURCES) as a :class:`probs.Probs` (dense (N, K)
        float16 up to ``probs.DENSE_MAX_CLASSES`` classes, else top-t + given label), None when not computed."""
        from .probs import load_probs

        return load_probs(self, src)

    def sources(self) -> list[str]:
        """Probability sources in the published set, in registry order."""
        from .probs import array_names
        from .registry import SOURCES

        return [s.key for s in SOURCES if any(self.has(n) for n in array_names(s.key))]

    # user settings that survive re-scans --------------------------------------------------------------------------
    def user_settings(self) -> dict[str, Any]:
        """``review.json`` (e.g. ``review_db``); a 0.1 workspace kept ``review_db`` in workspace.json."""
        p = self.path / USER_SETTINGS
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            return doc if isinstance(doc, dict) else {}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            raise WorkspaceError(f"{p}: cannot read ({type(e).__name__})") from None
        try:
            legacy = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {"review_db": legacy["review_db"]} if isinstance(legacy, dict) and legacy.get("review_db") else {}

    def set_user_setting(self, key: str, value: Any) -> None:
        """Set (or with None remove) one entry of ``review.json`` (atomic, locked read-modify-write)."""
        with _locked(self.path / ".lock"):
            doc = self.user_settings()
            if value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
            atomic_write_json(self.path / USER_SETTINGS, doc)

    # the one writer --------------------------------------------------------------------------------------------------
    def publish(self, settings: Settings, *, tables: Mapping[str, pd.DataFrame],
                arrays: Mapping[str, np.ndarray] | None = None, jsons: Mapping[str, Any] | None = None,
                embeddings: Path) -> Manifest:
        """Write one scan's whole set into a new generation and make it the workspace's published set.

        ``tables`` must hold ``dataset`` and ``scores``; ``arrays`` are written as ``<name>.npy`` — those whose first
        dimension equals the number of scores rows are recorded as row-aligned; ``embeddings`` is the assembled
        (N, D) matrix in the embedding cache (referenced, not copied). Everything is written and synced first, then
        ``workspace.json`` is replaced in one rename; artifacts of earlier sets that this one does not contain are
        gone with their generation. Raises ValueError when the set is inconsistent (nothing is published) and
        WorkspaceError when it cannot be written (nothing is published; the previous set is intact).
        """
        arrays = dict(arrays or {})
        jsons = dict(jsons or {})
        scores, dataset = tables["scores"], tables["dataset"]
        n = len(scores)
        emb = np.load(embeddings, mmap_mode="r")
        n_ok = int((dataset["status"] == "ok").sum())
        if emb.shape[0] != n or n_ok != n:
            raise ValueError(f"inconsistent scan set: {n} scores, {emb.shape[0]} embeddings, {n_ok} usable samples")
        for name, arr in arrays.items():
            if np.ndim(arr) and name.startswith(("probs_", "neighbor")) and np.shape(arr)[0] != n:  # row-aligned
                raise ValueError(f"inconsistent scan set: {name} has {np.shape(arr)[0]} rows, scores {n}")
        self.path.mkdir(parents=True, exist_ok=True)
        gen = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(3)  # sorts by time
        gdir = self.path / f"{GEN_PREFIX}{gen}"
        arts: dict[str, Artifact] = {}
        try:
            gdir.mkdir()
            (gdir / GEN_MARKER).write_text(gen, encoding="utf-8")
            for name, df in tables.items():
                data = table_bytes(df)
                _write_synced(gdir / f"{name}.parquet", data)
                arts[name] = Artifact(name, f"{gdir.name}/{name}.parquet", "table", len(df), (len(df),), "",
                                      len(data), aligned=len(df) == n and name != "dataset")
            for name, arr in arrays.items():
                arr = np.asarray(arr)
                data = array_bytes(arr)
                _write_synced(gdir / f"{name}.npy", data)
                arts[name] = Artifact(name, f"{gdir.name}/{name}.npy", "array", int(arr.shape[0]) if arr.ndim else -1,
                                      tuple(int(s) for s in arr.shape), str(arr.dtype), len(data),
                                      aligned=bool(arr.ndim) and arr.shape[0] == n and name.startswith(
                                          ("probs_", "neighbor")))
            for name, doc in jsons.items():
                data = json.dumps(doc, indent=1, default=_json_default).encode("utf-8")
                _write_synced(gdir / f"{name}.json", data)
                arts[name] = Artifact(name, f"{gdir.name}/{name}.json", "json", -1, (), "", len(data))
            emb_rel = os.path.relpath(Path(embeddings).absolute(), self.path)
            arts["embeddings"] = Artifact("embeddings", emb_rel, "array", int(emb.shape[0]),
                                          tuple(int(s) for s in emb.shape), str(emb.dtype),
                                          Path(embeddings).stat().st_size, aligned=True)
            with contextlib.suppress(OSError):  # notebooks: WS/current/embeddings.npy like every other file
                os.symlink(os.path.relpath(Path(embeddings).absolute(), gdir), gdir / "embeddings.npy")
            _fsync_dir(gdir)
            manifest = Manifest(generation=gen, published_at=datetime.now(UTC).isoformat(timespec="seconds"),
                                settings=settings, artifacts=arts)
            with _locked(self.path / ".lock"):
                legacy = self._legacy_settings()
                if legacy.get("review_db") and not (self.path / USER_SETTINGS).exists():
                    atomic_write_json(self.path / USER_SETTINGS, {"review_db": legacy["review_db"]})
                atomic_write_json(self.settings_path, manifest.to_dict())
        except OSError as e:
            shutil.rmtree(gdir, ignore_errors=True)  # our own, unpublished generation
            raise WorkspaceError(f"{self.path}: could not write the scan results ({e.strerror or e}); nothing was "
                                 "published and the previous results are intact") from None
        except BaseException:
            shutil.rmtree(gdir, ignore_errors=True)
            raise
        self._manifest = None
        self._after_publish(gdir, legacy)
        return manifest

    def _legacy_settings(self) -> dict:
        try:
            doc = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) and doc.get("format") != FORMAT else {}

    def _after_publish(self, gdir: Path, legacy: dict) -> None:
        """Point ``current`` at the new set; remove older generations (ours: marker file) and, after a 0.1
        workspace, its flat result files."""
        with contextlib.suppress(OSError):
            tmp = self.path / f".{CURRENT_LINK}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(gdir.name, tmp)
            os.replace(tmp, self.path / CURRENT_LINK)
        gens = sorted((d for d in self.path.glob(f"{GEN_PREFIX}*") if d.is_dir() and (d / GEN_MARKER).is_file()),
                      key=lambda d: d.name)
        for old in gens[:-KEEP_GENERATIONS]:
            if old != gdir:
                shutil.rmtree(old, ignore_errors=True)
        if legacy and "embedding_key" in legacy:
            for name in LEGACY_FILES:
                with contextlib.suppress(OSError):
                    (self.path / name).unlink()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
