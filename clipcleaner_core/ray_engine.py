"""Distributed embedding on Ray Data (``clipcleaner scan ... --engine ray [--ray-address ADDR]``).

Same inputs and outputs as :func:`clipcleaner_core.embeddings.embed_samples`, run as a Ray Data pipeline:

1. **read**: the image paths (and their row index) become a ``ray.data`` dataset (``from_items``);
2. **decode + preprocess** (stateless map tasks, ``map_batches`` with a function): each task runs
   :func:`clipcleaner_core.images.decode_for_embedding` (the local engine's decode path) with the encoder's own
   preprocessing (for CLIP, the open_clip transform object, ~1 KB pickled; for pixels, the resize). A file that
   fails to decode becomes a stand-in row with ``ok=False`` and the reason, exactly like the local engine — it
   never fails the job;
3. **encode** (an actor pool, ``map_batches`` with a callable class and ``ActorPoolStrategy(size=N)``, the
   successor of ``concurrency=N`` in Ray >= 2.51): every actor builds its
   own encoder once from a small picklable *spec* (encoder kind, model name, checkpoint / pretrained tag, model
   config path, precision) — the torch model never travels through the object store. On a cluster with GPUs each
   actor takes one (``num_gpus=1``) and there is one actor per GPU; on a CPU-only cluster the actors take a share
   of the CPUs and leave the rest to the decode tasks;
4. the driver streams the results back and writes them as the same per-chunk cache files
   (``WS/cache/emb-<key>/chunk-*.npz``) as the local engine, then :func:`clipcleaner_core.embeddings.assemble`
   writes ``embeddings.npy``. A re-run with either engine reuses (or resumes from) those chunks.

Every node needs the same Python environment (``pip install -r requirements.txt`` + clipcleaner) and must see
the images, the checkpoint and the model config at the same absolute paths (a shared filesystem).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import images, quality
from .embeddings import ChunkWriter, EmbeddingResult, assemble, plan_embedding
from .encoders import Encoder
from .images import decode_for_embedding, stand_in

Progress = Callable[[str, int, int], None]

# identity fields that may legitimately differ between the driver's and a worker's copy of the same weights
_LOCAL_IDENTITY_FIELDS = ("mtime_ns",)


# ------------------------------------------------------------------------------------------------ spec
def encoder_spec(encoder: Encoder, *, kind: str, model: str = "ViT-B-32", pretrained: str | None = None,
                 checkpoint: str | None = None, model_config: str | None = None, device: str = "auto",
                 pixel_size: int = 16) -> dict[str, Any]:
    """A picklable recipe that rebuilds ``encoder`` inside a Ray actor (``make_encoder(**spec["args"])``).

    Paths are made absolute; the precision is the one the driver's encoder resolved to, so that every actor
    computes what the cache key (the driver encoder's identity) says — also when the actors run on GPUs and
    the driver on a CPU.
    """
    def absolute(p: str | None) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else None

    args: dict[str, Any] = {"model": model, "pretrained": pretrained, "checkpoint": absolute(checkpoint),
                            "model_config": absolute(model_config), "device": device,
                            "precision": encoder.identity.get("precision", "auto"), "pixel_size": pixel_size}
    return {"kind": kind, "args": args, "identity": dict(encoder.identity)}


def light_preprocess(encoder: Encoder) -> Callable:
    """The encoder's preprocessing as a small picklable callable (PIL image → tensor), without the model."""
    transform = getattr(encoder, "transform", None)
    if transform is not None:  # ClipEncoder: the open_clip torchvision transform
        return transform
    if getattr(encoder, "model", None) is None:  # PixelEncoder and other weightless encoders
        return encoder.preprocess
    raise ValueError(f"the {encoder.kind} encoder has no separable preprocessing; use --engine local")


# ------------------------------------------------------------------------------------------ ray stages
def _decode_batch(batch: dict[str, np.ndarray], preprocess: Callable) -> dict[str, np.ndarray]:
    """Map task: paths / image locators → preprocessed arrays. Never raises on a bad image (ok=False + reason)."""
    decoded = [decode_for_embedding(str(p), preprocess) for p in batch["path"]]
    return _decoded_columns(decoded, preprocess, idx=np.asarray(batch["idx"], dtype=np.int64))


def _decode_webdataset_batch(batch: dict[str, np.ndarray], preprocess: Callable) -> dict[str, np.ndarray]:
    """Map task after ``ray.data.read_webdataset``: each sample's image member (renamed ``KEY.image`` by
    :func:`_webdataset_rename`) → preprocessed array; ``url`` (the shard) and ``key`` name the sample."""
    decoded = [_decode_cell(v, "", preprocess) for v in batch["image"]]
    return _decoded_columns(decoded, preprocess, url=batch["__url__"], key=batch["__key__"])


def _decode_parquet_batch(batch: Any, preprocess: Callable, column: str) -> dict[str, np.ndarray]:
    """Map task after ``ray.data.read_parquet`` (an Arrow batch of the image column + the ``path`` of its shard).
    The row numbers are counted by the driver: the read preserves the order of the rows of each shard."""
    data, orig = images.image_cells(batch.column(column))
    decoded = [_decode_cell(d, o, preprocess) for d, o in zip(data, orig)]
    return _decoded_columns(decoded, preprocess, url=np.asarray(batch.column("path").to_pylist(), dtype=object))


def _decode_cell(data: Any, orig: str, preprocess: Callable) -> images.Decoded:
    """One image cell of a shard read by Ray → :class:`images.Decoded` (a missing cell fails like a local read)."""
    try:
        data = images.embedded_bytes(None if data is None or isinstance(data, float) else data, orig)
    except ValueError as e:
        return images.Decoded(None, None, False, images.decode_failure(e))
    return decode_for_embedding(data, preprocess)


def _decoded_columns(decoded: list, preprocess: Callable, **ids: np.ndarray) -> dict[str, np.ndarray]:
    """The columns a decode task hands to the encode actors (``ids`` name the samples: ``idx``, or ``url`` +
    ``key``, or ``url`` alone) with the image statistics (``stat_*``, :func:`quality.batch_columns`): failed samples
    get the stand-in input."""
    zero = None
    xs = []
    for d in decoded:
        if not d.ok and zero is None:
            zero = np.asarray(stand_in(preprocess), dtype=np.float32)
        xs.append(np.asarray(d.x, dtype=np.float32) if d.ok else zero)
    n = len(decoded)
    cols = {"idx": np.full(n, -1, dtype=np.int64), "url": np.full(n, "", dtype=object),
            "key": np.full(n, "", dtype=object)}
    cols.update({k: np.asarray(v, dtype=cols[k].dtype) for k, v in ids.items()})
    return {**cols, "x": np.stack(xs), "ok": np.asarray([d.ok for d in decoded], dtype=bool),
            "reason": np.asarray([d.reason for d in decoded], dtype=object),
            **quality.batch_columns([quality.image_stats(d.image) if d.ok else quality.no_stats() for d in decoded])}


def _webdataset_image(fname: str) -> bool:
    """``fileselect`` of ``read_webdataset`` (applied after :func:`_webdataset_rename`): only the image members are
    kept (the labels are known from the scan)."""
    return images.key_and_ext(fname)[1] == "image"


def _webdataset_rename(fname: str) -> str:
    """``filerename`` of ``read_webdataset``: ``KEY.jpg`` / ``KEY.png`` … → ``KEY.image`` (one column for every
    image format); other members keep their name."""
    key, ext = images.key_and_ext(fname)
    return f"{key}.image" if key is not None and f".{ext.lower()}" in images.IMAGE_EXTENSIONS else fname


class _EncodeActor:
    """Actor of the encode pool: one model per actor, built from the spec in the actor's process."""

    def __init__(self, spec: dict[str, Any], threads: int = 1):
        import torch

        from .encoders import make_encoder

        if threads > 0 and not torch.cuda.is_available():
            torch.set_num_threads(int(threads))
        self.encoder = make_encoder(spec["kind"], **spec["args"])
        want = {k: v for k, v in spec["identity"].items() if k not in _LOCAL_IDENTITY_FIELDS}
        got = {k: v for k, v in self.encoder.identity.items() if k not in _LOCAL_IDENTITY_FIELDS}
        if want != got:
            raise RuntimeError(f"this Ray worker built a different encoder than the driver ({got} != {want}): "
                               f"every node must see the same model config and checkpoint files")
        self._torch = torch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._torch.from_numpy(np.array(batch["x"], dtype=np.float32))  # a writable copy of the block
        feats = np.asarray(self.encoder.encode_images(x), dtype=np.float32)
        return {**{k: v for k, v in batch.items() if k != "x"}, "feats": feats}  # idx / url / key pass through


# ------------------------------------------------------------------------------------------- resources
def plan_resources(cluster: dict[str, float], node_cpus: Sequence[float] = (), actors: int | None = None
                   ) -> dict[str, Any]:
    """How to size the encode actor pool on a cluster with ``cluster`` resources (``ray.cluster_resources()``).

    With GPUs: one actor per GPU (``num_gpus=1``, 1 CPU each). CPU-only: one actor per 8 CPUs (at least one);
    a quarter of the CPUs (at least one) stays free for the decode tasks and the rest is split among the actors,
    capped by the largest node (an actor cannot span nodes). ``actors`` overrides the count.
    ``decode_tasks`` caps the concurrent decode tasks at the CPUs the actors leave free; it always differs from
    ``concurrency`` so that Ray Data keeps decoding in its own tasks instead of fusing it into the actors.
    Returns ``{"concurrency", "num_gpus", "num_cpus", "threads", "decode_tasks"}``.
    """
    gpus = int(cluster.get("GPU", 0))
    cpus = max(1, int(cluster.get("CPU", 1)))
    if gpus >= 1:
        n = max(1, int(actors or gpus))
        plan = {"concurrency": n, "num_gpus": 1, "num_cpus": 1, "threads": 1}
    else:
        n = max(1, int(actors or cpus // 8))
        free_for_decode = max(1, cpus // 4)
        per_actor = max(1, (cpus - free_for_decode) // n)
        if node_cpus:
            per_actor = max(1, min(per_actor, int(max(node_cpus))))
        plan = {"concurrency": n, "num_gpus": 0, "num_cpus": per_actor, "threads": per_actor}
    decode = max(1, cpus - plan["concurrency"] * plan["num_cpus"])
    plan["decode_tasks"] = decode + 1 if decode == plan["concurrency"] else decode
    return plan


class RayUnavailable(ValueError):
    """The Ray cluster named by ``--ray-address`` / ``$RAY_ADDRESS`` cannot be reached."""


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds (not Ray's minutes of retries) when ``host:port`` / ``ray://host:port`` does not answer."""
    import socket
    from urllib.parse import urlsplit

    if address == "auto":  # the cluster this machine joined last (Ray's own lookup; a stale entry is common)
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto") or "local"
        except Exception:  # noqa: BLE001 - no cluster found, or Ray changed its internals: ray.init says why
            return
    if address == "local" or "://" in address and not address.startswith("ray://"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise RayUnavailable(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({e}); is `ray start --head` running "
                             f"there, and is the port open?") from None


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` (or ``$RAY_ADDRESS``, or start a local one); reuse an open one.

    A session opened here is shut down on exit; one that was already open (``ray.init`` by the caller) is kept.
    """
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        target = address or os.environ.get("RAY_ADDRESS")
        if not target:
            kwargs["include_dashboard"] = False
        else:
            _probe(target)
        try:
            ray.init(address=address or None, **kwargs)
        except ConnectionError as e:
            hint = ("" if os.environ.get("RAY_AUTH_MODE") or "Could not find any running" in str(e) else
                    "; if the cluster uses token authentication (the default of `ray start` since Ray 2.59), "
                    "set RAY_AUTH_MODE=token and give its token (~/.ray/auth_token or RAY_AUTH_TOKEN)")
            raise RayUnavailable(f"cannot connect to Ray at {target or 'a local instance'}: {e}{hint}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's per-run INFO lines and sizing hints off in the driver (its warnings and errors stay on)."""
    import warnings

    lg = logging.getLogger("ray.data")
    level = lg.level
    lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks")
        try:
            yield
        finally:
            lg.setLevel(level)


# ------------------------------------------------------------------------------------------------ reads
def _shard_url(u: str) -> str:
    """A shard path as Ray reports it (``__url__``, ``path``), comparable with the locator's file."""
    for scheme in ("local://", "file://"):
        if u.startswith(scheme):
            u = u[len(scheme):]
    return os.path.normpath(u)


class _Reads:
    """How the samples to embed are read on Ray, and how each result row finds its global sample index.

    WebDataset shards that ``read_webdataset`` reads as the scan did (:func:`shards.readable_by_ray`) are read with
    it (rows named by shard + key); Parquet shards with ``read_parquet`` (rows named by shard + position, the read
    preserving row order); image files, and members of irregular tar shards, by path / locator (``from_items``).
    A sample a shard reader did not deliver (a shard it failed on) is read by locator afterwards.
    """

    def __init__(self, todo: dict[int, str]):
        from .shards import readable_by_ray

        self.todo = todo
        self.tar: dict[tuple[str, str], int] = {}
        self.parquet: dict[str, dict[int, int]] = {}
        regular: dict[str, bool] = {}
        for g, p in todo.items():
            loc = images.parse_locator(p)
            if loc.kind == "tar":
                if loc.file not in regular:
                    regular[loc.file] = readable_by_ray(loc.file)
                if regular[loc.file]:
                    self.tar[(os.path.normpath(loc.file), images.key_and_ext(loc.member)[0] or "")] = g
                    continue
            elif loc.kind == "parquet":
                self.parquet.setdefault(os.path.normpath(loc.file), {})[loc.row] = g
                continue
        self._rows: dict[str, int] = {}

    def tar_files(self) -> list[str]:
        return sorted({f for f, _ in self.tar})

    def parquet_files(self) -> dict[str, list[str]]:
        """Parquet shards to read, grouped by the name of their image column."""
        import pyarrow.parquet as pq

        out: dict[str, list[str]] = {}
        for f in sorted(self.parquet):
            col = images.image_column(pq.read_schema(f))
            if col is not None:
                out.setdefault(col, []).append(f)
        return out

    def resolve(self, b: dict[str, np.ndarray], j: int) -> int | None:
        """The global sample index of result row ``j`` of batch ``b``, or None for a row not to embed."""
        g = int(b["idx"][j])
        if g >= 0:
            return g
        url = _shard_url(str(b["url"][j]))
        key = str(b["key"][j])
        if key:
            return self.tar.get((url, key))
        row = self._rows.get(url, 0)
        self._rows[url] = row + 1
        return self.parquet.get(url, {}).get(row)


# ------------------------------------------------------------------------------------------------ main
def embed_samples_ray(abs_paths: Sequence[str], sample_ids: Sequence[str], encoder: Encoder, spec: dict[str, Any],
                      cache_dir: Path, out_path: Path, *, address: str | None = None, batch_size: int = 64,
                      actors: int | None = None, progress: Progress | None = None) -> EmbeddingResult:
    """Encode images ``abs_paths`` (N,: paths or image locators) on a Ray cluster; same cache files and result as
    ``embed_samples``.

    ``encoder`` is the driver's copy (used for the cache identity and the final dataset-level
    ``fit_stats``/``finalize``); the actors rebuild it from ``spec`` (see :func:`encoder_spec`). Chunks already in
    ``cache_dir`` are not recomputed (a shard is read whole when any of its samples is still to do).
    ``progress(stage, done, total)``: stage "embed" per finished block, "assemble" while joining.
    """
    plan = plan_embedding(cache_dir, sample_ids, progress)
    notes = list(plan.notes)
    if plan.todo:
        reads = _Reads({int(g): str(abs_paths[g]) for g in plan.order})
        writer = ChunkWriter(cache_dir, sample_ids, plan.todo)
        state = {"done": plan.done}
        with ray_session(address) as ray, _quiet_ray_data():
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # the caller's progress callback reports instead
            res = plan_resources(ray.cluster_resources(),
                                 [nd.get("Resources", {}).get("CPU", 0) for nd in ray.nodes() if nd.get("Alive")],
                                 actors)
            bs = max(1, int(batch_size))
            pre = light_preprocess(encoder)
            decode = {"compute": ray.data.TaskPoolStrategy(size=res["decode_tasks"]), "batch_size": bs,
                      "num_cpus": 1}

            def run(make: Callable[[], Any], what: str, expect: int, ordered: bool = False) -> None:
                # (a dataset copies the context it is made in.) Ray 2.60's V2 Parquet reader resolves paths in
                # threads that race on importing fsspec's optional HTTP filesystem (aiohttp is not installed) and
                # fail the read now and then; the V1 reader resolves them in one thread.
                old = ctx.execution_options.preserve_order, ctx.use_datasource_v2
                ctx.execution_options.preserve_order, ctx.use_datasource_v2 = ordered, False
                left = len(reads.todo)
                try:
                    ds = make().map_batches(
                        _EncodeActor, fn_constructor_kwargs={"spec": spec, "threads": res["threads"]},
                        compute=ray.data.ActorPoolStrategy(size=res["concurrency"]), num_gpus=res["num_gpus"],
                        num_cpus=res["num_cpus"], batch_size=bs, batch_format="numpy")
                    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
                        for j in range(len(b["ok"])):
                            g = reads.resolve(b, j)
                            if g is None or g not in reads.todo:
                                continue
                            del reads.todo[g]
                            writer.add(g, b["feats"][j], bool(b["ok"][j]), str(b["reason"][j]), quality.row(b, j))
                            state["done"] += 1
                        if progress:
                            progress("embed", min(state["done"], plan.n), plan.n)
                except Exception as e:  # noqa: BLE001 - a shard Ray cannot read: its images are read one by one
                    if what == "items":
                        raise
                    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    notes.append(f"Ray could not read every {what} shard ({type(e).__name__}: {msg[:200]}); "
                                 f"their images were read one by one")
                else:
                    got = left - len(reads.todo)
                    if what != "items" and got < expect:
                        notes.append(f"Ray's {what} reader returned {got:,} of the {expect:,} images expected; the "
                                     f"others were read one by one")
                finally:
                    ctx.execution_options.preserve_order, ctx.use_datasource_v2 = old

            if reads.tar:
                run(lambda: ray.data.read_webdataset(reads.tar_files(), decoder=None, fileselect=_webdataset_image,
                                                     filerename=_webdataset_rename)
                    .map_batches(_decode_webdataset_batch, fn_kwargs={"preprocess": pre}, batch_format="numpy",
                                 **decode), "WebDataset", len(reads.tar))
            for col, files in reads.parquet_files().items():
                run(lambda files=files, col=col: ray.data.read_parquet(files, columns=[col], include_paths=True)
                    .map_batches(_decode_parquet_batch, fn_kwargs={"preprocess": pre, "column": col},
                                 batch_format="pyarrow", **decode), "Parquet",
                    sum(len(reads.parquet[os.path.normpath(f)]) for f in files), ordered=True)
            if reads.todo:  # image files, irregular tar shards, and anything a shard read did not deliver
                items = [{"idx": g, "path": p} for g, p in sorted(reads.todo.items())]
                blocks = max(1, min(len(items), -(-len(items) // bs)))
                run(lambda: ray.data.from_items(items, override_num_blocks=blocks)
                    .map_batches(_decode_batch, fn_kwargs={"preprocess": pre}, batch_format="numpy", **decode),
                    "items", len(items))
        missing = writer.incomplete()
        if missing:
            raise RuntimeError(f"the Ray job returned incomplete results for chunk(s) {missing}; run the scan again "
                               f"to resume")
    return assemble(cache_dir, plan.n_chunks, sample_ids, encoder, out_path, plan.reused, progress, notes)
