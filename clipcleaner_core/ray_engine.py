"""Distributed embedding on Ray Data (``clipcleaner scan ... --engine ray [--ray-address ADDR]``).

Same inputs and outputs as :func:`clipcleaner_core.embeddings.embed_samples`, run as a Ray Data pipeline:

1. **read**: the image paths (and their row index) become a ``ray.data`` dataset (``from_items``);
2. **decode + preprocess** (stateless map tasks, ``map_batches`` with a function): each task decodes with
   :func:`clipcleaner_core.dataset.load_image` and applies the encoder's own preprocessing (for CLIP, the open_clip
   transform object, ~1 KB pickled; for pixels, the resize). A file that fails to decode becomes a stand-in
   row with ``ok=False`` and the reason, exactly like the local engine — it never fails the job;
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
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import quality
from .dataset import limit_aspect, load_image
from .embeddings import CHUNK, ChunkWriter, EmbeddingResult, assemble, chunks_to_compute
from .encoders import Encoder

Progress = Callable[[str, int, int], None]
ENGINES = ("local", "ray")

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
    """Map task: paths → preprocessed arrays and image statistics (``stat_*`` columns). Never raises on a bad image
    (ok=False + reason instead)."""
    xs: list[np.ndarray | None] = []
    oks: list[bool] = []
    reasons: list[str] = []
    stats: list[dict] = []
    for p in batch["path"]:
        try:
            img = load_image(str(p))
            xs.append(np.asarray(preprocess(limit_aspect(img)), dtype=np.float32))
            stats.append(quality.image_stats(img))
            oks.append(True)
            reasons.append("")
        except Exception as e:  # noqa: BLE001 - any decode failure is reported, not fatal (as embed_samples)
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            stats.append(quality.no_stats())
            xs.append(None)
            oks.append(False)
            reasons.append(f"cannot decode image ({type(e).__name__}: {msg})")
    if any(x is None for x in xs):
        from PIL import Image

        zero = np.asarray(preprocess(Image.new("RGB", (32, 32), (255, 255, 255))), dtype=np.float32)
        xs = [zero if x is None else x for x in xs]
    return {"idx": np.asarray(batch["idx"], dtype=np.int64), "x": np.stack(xs),
            "ok": np.asarray(oks, dtype=bool), "reason": np.asarray(reasons, dtype=object),
            **quality.batch_columns(stats)}


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
        return {**{k: v for k, v in batch.items() if k != "x"}, "feats": feats}


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


# ------------------------------------------------------------------------------------------------ main
def embed_samples_ray(abs_paths: Sequence[str], sample_ids: Sequence[str], encoder: Encoder, spec: dict[str, Any],
                      cache_dir: Path, out_path: Path, *, address: str | None = None, batch_size: int = 64,
                      actors: int | None = None, progress: Progress | None = None) -> EmbeddingResult:
    """Encode images ``abs_paths`` (N,) on a Ray cluster; same cache files and result as ``embed_samples``.

    ``encoder`` is the driver's copy (used for the cache identity and the final dataset-level
    ``fit_stats``/``finalize``); the actors rebuild it from ``spec`` (see :func:`encoder_spec`). Chunks already in
    ``cache_dir`` are not recomputed. ``progress(stage, done, total)``: stage "embed" per finished block,
    "assemble" while joining.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(abs_paths)
    n_chunks = (n + CHUNK - 1) // CHUNK
    todo, notes = chunks_to_compute(cache_dir, sample_ids)
    reused = not todo
    done = n - sum(min(CHUNK, n - c * CHUNK) for c in todo)
    if progress:
        progress("embed", min(done, n), n)
    if todo:
        order = np.concatenate([np.arange(c * CHUNK, min(n, (c + 1) * CHUNK)) for c in todo])
        with ray_session(address) as ray, _quiet_ray_data():
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # the caller's progress callback reports instead
            plan = plan_resources(ray.cluster_resources(),
                                  [nd.get("Resources", {}).get("CPU", 0) for nd in ray.nodes() if nd.get("Alive")],
                                  actors)
            items = [{"idx": int(g), "path": str(abs_paths[g])} for g in order]
            bs = max(1, int(batch_size))
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), -(-len(items) // bs))))
            ds = ds.map_batches(_decode_batch, fn_kwargs={"preprocess": light_preprocess(encoder)},
                                compute=ray.data.TaskPoolStrategy(size=plan["decode_tasks"]),
                                batch_size=bs, batch_format="numpy", num_cpus=1)
            ds = ds.map_batches(_EncodeActor, fn_constructor_kwargs={"spec": spec, "threads": plan["threads"]},
                                compute=ray.data.ActorPoolStrategy(size=plan["concurrency"]),
                                num_gpus=plan["num_gpus"], num_cpus=plan["num_cpus"], batch_size=bs,
                                batch_format="numpy")
            writer = ChunkWriter(cache_dir, sample_ids, todo)
            for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for j, g in enumerate(np.asarray(b["idx"]).tolist()):
                    writer.add(g, b["feats"][j], bool(b["ok"][j]), str(b["reason"][j]), quality.row(b, j))
                done += len(b["idx"])
                if progress:
                    progress("embed", min(done, n), n)
        missing = writer.incomplete()
        if missing:
            raise RuntimeError(f"the Ray job returned incomplete results for chunk(s) {missing}; run the scan again "
                               f"to resume")
    return assemble(cache_dir, n_chunks, sample_ids, encoder, out_path, reused, progress, notes)
