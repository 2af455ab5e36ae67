"""Encoders: turn decoded images (and, for CLIP, class prompts) into feature vectors.

Two kinds, one interface (:class:`Encoder`):

- ``clip``: any open_clip architecture, weights from a pretrained tag (found in the local Hugging Face / open_clip
  cache; missing weights offline fail in seconds with a message saying what to download) or a local checkpoint
  file. Runs on CUDA with fp16/bf16 autocast when present, else on the CPU (fp32, or bf16 autocast).
- ``pixels``: needs no weights: images resized to ``size``×``size`` RGB, features standardised per dimension over
  the dataset and L2-normalised. It has no text tower, so the zero-shot criteria are unavailable with it.

Split like open_clip's factory/transform: ``preprocess`` runs in DataLoader workers (decode + resize + to
tensor), ``encode_images`` runs the model on a batch in the main process.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENCODER_KINDS = ("clip", "pixels")


class WeightsUnavailable(RuntimeError):
    """CLIP weights are neither cached locally nor downloadable from here. The message says what to do."""


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


@dataclass
class Encoder(abc.ABC):
    """Common interface. Subclasses fill ``identity`` (JSON-able; keys the embedding cache)."""

    kind: str
    identity: dict[str, Any] = field(default_factory=dict)
    has_text: bool = False

    @property
    def description(self) -> str:
        return json.dumps(self.identity, sort_keys=True)

    def cache_key(self) -> str:
        return hashlib.sha256(self.description.encode()).hexdigest()[:16]

    @abc.abstractmethod
    def preprocess(self, image) -> Any:
        """A decoded RGB ``PIL.Image`` → a ``torch.Tensor`` ready to batch (runs in DataLoader workers)."""

    @abc.abstractmethod
    def encode_images(self, batch) -> np.ndarray:
        """A batch tensor (B, ...) → raw features (B, D) float32."""

    def finalize(self, stats: dict | None, feats: np.ndarray) -> np.ndarray:
        """Dataset-level post-processing of raw features (N, D) → unit-norm float32 features (N, D)."""
        return l2_normalize(feats)

    def fit_stats(self, chunks: Callable[[], Any]) -> dict | None:
        """Statistics over all raw features needed by :meth:`finalize` (None when none are needed)."""
        return None

    def encode_text(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError(f"the {self.kind} encoder has no text tower: zero-shot scores need CLIP weights")


# ------------------------------------------------------------------------------------------------ pixels
class PixelEncoder(Encoder):
    """Raw pixels: resize to ``size``×``size`` (box filter), RGB in [0, 1], flattened (3·size², ) per image."""

    def __init__(self, size: int = 16):
        super().__init__(kind="pixels", identity={"encoder": "pixels", "size": int(size), "version": 1},
                         has_text=False)
        self.size = int(size)

    def preprocess(self, image):
        import torch
        from PIL import Image

        im = image.resize((self.size, self.size), Image.BOX)
        return torch.from_numpy(np.asarray(im, dtype=np.float32).reshape(-1) / 255.0)

    def encode_images(self, batch) -> np.ndarray:
        return batch.numpy().astype(np.float32, copy=False)

    def fit_stats(self, chunks) -> dict:
        n, s, ss = 0, None, None
        for c in chunks():
            c = np.asarray(c, dtype=np.float64)
            s = c.sum(0) if s is None else s + c.sum(0)
            ss = (c * c).sum(0) if ss is None else ss + (c * c).sum(0)
            n += len(c)
        if n == 0:
            return {"mean": None, "std": None}
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
        return {"mean": mean, "std": std}

    def finalize(self, stats, feats):
        x = np.asarray(feats, dtype=np.float64)
        if stats and stats.get("mean") is not None:
            sd = stats["std"]
            x = (x - stats["mean"]) / np.where(sd > 1e-6, sd, 1.0)
        return l2_normalize(x)


# -------------------------------------------------------------------------------------------------- clip
def _hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    """True when a TCP connection to the hub opens within ``timeout`` seconds (DNS included)."""
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result["ok"]


def offline_mode() -> bool:
    """True when the environment asks for no hub access
    (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / CLIPCLEANER_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CLIPCLEANER_OFFLINE"))


def cached_pretrained_file(model: str, tag: str, cache_dir: str | None = None) -> str | None:
    """Local file holding open_clip weights ``model``/``tag`` if already downloaded, else None.

    Looks where open_clip itself downloads: the Hugging Face hub cache (``HF_HOME``/``HF_HUB_CACHE``) for
    ``hf_hub`` weights, and ``~/.cache/clip`` (or ``cache_dir``) for URL weights.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - open_clip depends on huggingface_hub
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, fname = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
            names = [fname] if fname else []
            names += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if fname.endswith(".bin"):
                names.insert(0, fname[:-4] + ".safetensors")
            for name in names:
                hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
    url = cfg.get("url", "")
    if url:
        p = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if p.is_file():
            return str(p)
    return None


def check_pretrained_available(model: str, tag: str, cache_dir: str | None = None,
                               probe: Callable[[], bool] = _hub_reachable) -> str:
    """Validate ``model``/``tag`` and return "cached" or "download"; raise fast when it cannot be had.

    Raises :class:`ValueError` for an unknown model or tag, :class:`WeightsUnavailable` (within ~3 s) when the
    weights are not cached and the hub is unreachable or offline mode is set.
    """
    import open_clip

    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; see `python -c 'import open_clip; "
                         f"print(open_clip.list_models())'` or register a config with --model-config")
    if not open_clip.get_pretrained_cfg(model, tag):
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(f"unknown pretrained tag {tag!r} for {model}; known tags: {', '.join(tags) or 'none'}")
    if cached_pretrained_file(model, tag, cache_dir):
        return "cached"
    why = "offline mode is set (HF_HUB_OFFLINE)" if offline_mode() else None
    if why is None and not probe():
        why = "the model hub cannot be reached from this machine"
    if why:
        raise WeightsUnavailable(
            f"CLIP weights {model}/{tag} are not in the local cache and {why}.\n"
            f"  - On a machine with internet, run: python -c \"import open_clip; "
            f"open_clip.create_model_and_transforms('{model}', pretrained='{tag}')\" and copy its cache "
            f"(~/.cache/huggingface/hub and ~/.cache/clip) here, or\n"
            f"  - pass a local weights file with --checkpoint FILE, or\n"
            f"  - use --encoder pixels (no weights; no zero-shot scores)."
        )
    return "download"


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def autocast_context(device: str, precision: str):
    """Autocast for ``precision`` in {'fp32','bf16','fp16','auto'} on ``device`` ('auto': fp16 on CUDA, fp32 on CPU)."""
    import torch

    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def register_model_config(path: str | os.PathLike) -> list[str]:
    """Register an extra open_clip model config (a JSON file or a folder of them); returns the model names."""
    import open_clip

    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: model config not found")
    open_clip.add_model_config(p)
    files = [p] if p.is_file() else sorted(p.glob("*.json"))
    return [f.stem for f in files]


class ClipEncoder(Encoder):
    """An open_clip model with its own preprocessing and tokenizer."""

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, checkpoint: str | None = None,
                 device: str = "auto", precision: str = "auto", cache_dir: str | None = None,
                 probe: Callable[[], bool] = _hub_reachable):
        import open_clip
        import torch

        if not pretrained and not checkpoint:
            raise ValueError("the clip encoder needs weights: --pretrained TAG (e.g. openai) or --checkpoint FILE; "
                             "for a run without weights use --encoder pixels")
        if pretrained and checkpoint:
            raise ValueError("give either --pretrained or --checkpoint, not both")
        if model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r}; register a config with --model-config FILE")
        self.device = resolve_device(device)
        self.precision = precision if precision != "auto" else ("fp16" if self.device.startswith("cuda") else "fp32")
        if checkpoint:
            ck = Path(checkpoint).expanduser()
            if not ck.is_file():
                raise WeightsUnavailable(f"{ck}: checkpoint file not found")
            import logging

            class _NoRandomInitNote(logging.Filter):  # open_clip says "initialized randomly" before we load
                def filter(self, record: logging.LogRecord) -> bool:
                    return "No pretrained weights loaded" not in record.getMessage()

            flt = _NoRandomInitNote()
            logging.getLogger().addFilter(flt)
            try:
                net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, device="cpu")
            finally:
                logging.getLogger().removeFilter(flt)
            try:
                open_clip.load_checkpoint(net, str(ck))
            except Exception as e:  # noqa: BLE001 - a wrong checkpoint is a user error with a clear message
                raise ValueError(f"{ck}: cannot load this checkpoint into {model} ({type(e).__name__}: {e})") from None
            st = ck.stat()
            weights = {"checkpoint": str(ck.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        else:
            state = check_pretrained_available(model, pretrained, cache_dir, probe)
            env = {"HF_HUB_OFFLINE": "1"} if state == "cached" else {}
            with _env(**env):
                net, _, preprocess = open_clip.create_model_and_transforms(
                    model, pretrained=pretrained, device="cpu", cache_dir=cache_dir)
            weights = {"pretrained": pretrained}
        net = net.to(self.device).eval()
        self.model = net
        self.model_name = model
        self.transform = preprocess
        self.tokenizer = open_clip.get_tokenizer(model)
        self._torch = torch
        image_size = getattr(getattr(net, "visual", None), "image_size", None)
        super().__init__(kind="clip", has_text=True, identity={
            "encoder": "clip", "model": model, **weights, "precision": self.precision,
            "image_size": list(image_size) if isinstance(image_size, (tuple, list)) else image_size,
        })
        self.weights_label = pretrained or Path(checkpoint).name  # type: ignore[arg-type]

    def preprocess(self, image):
        return self.transform(image)

    def encode_images(self, batch) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            x = batch.to(self.device, non_blocking=True)
            f = self.model.encode_image(x)
        return l2_normalize(f.float().cpu().numpy())

    def encode_text(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        torch = self._torch
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
            with torch.inference_mode(), autocast_context(self.device, self.precision):
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        dim = out[0].shape[1] if out else 0
        return l2_normalize(np.concatenate(out) if out else np.zeros((0, dim), np.float32))


def make_encoder(kind: str = "pixels", *, model: str = "ViT-B-32", pretrained: str | None = None,
                 checkpoint: str | None = None, device: str = "auto", precision: str = "auto",
                 pixel_size: int = 16, model_config: str | None = None, cache_dir: str | None = None) -> Encoder:
    """Build an encoder by name (``clip`` or ``pixels``); see the class docs for the arguments."""
    if kind == "pixels":
        return PixelEncoder(size=pixel_size)
    if kind == "clip":
        if model_config:
            register_model_config(model_config)
        return ClipEncoder(model=model, pretrained=pretrained, checkpoint=checkpoint, device=device,
                           precision=precision, cache_dir=cache_dir)
    raise ValueError(f"unknown encoder {kind!r}; choose one of {', '.join(ENCODER_KINDS)}")
