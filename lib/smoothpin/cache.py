"""Content-addressed on-disk cache for trained networks and sweep results.

key = SHA-256 of the canonical JSON (sorted keys, no whitespace) of
    {"config": <the caller's configuration>, "smoothpin": __version__, "torch": torch.__version__,
     "device": <device>, "dtype": <dtype>},
so a change in any configuration value, in the library or torch version, the device or the dtype is
a miss. An entry is the file <directory>/<key>.pt holding

    MAGIC (16 bytes) | payload length (8 bytes, little endian) | SHA-256 of the payload (32 bytes) | payload

where payload = torch.save({"config": <canonical JSON>, "value": <result>}). It is written atomically
(temporary file in the same directory, flush + fsync, os.replace, fsync of the directory), so a
reader sees either the old entry or the new one. On reading, a wrong magic, length or checksum (a
truncated or corrupt file), or a stored configuration different from the requested one, deletes the
file and recomputes: a damaged entry is never loaded. If ``compute_fn`` raises, nothing is written
and an existing entry is untouched. Values are loaded with ``torch.load(weights_only=True)``: use
tensors, state_dicts, dicts, lists, tuples, numbers and strings.

Default directory: $SMOOTHPIN_CACHE, else <repository>/.smoothpin_cache (git-ignored).
``cached_training(key, net, train_fn)`` is the pattern chapters use for a trained network: the
entry holds the network's state_dict and whatever train_fn returned (e.g. its loss history).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import tempfile
from pathlib import Path

import torch

from ._checks import check_callable

__all__ = ["cached", "cached_training", "cache_key", "default_cache_dir"]

_MAGIC = b"SMOOTHPIN-CACHE1"
_HEADER = len(_MAGIC) + 8 + 32


def default_cache_dir():
    """$SMOOTHPIN_CACHE if set, else <repository root>/.smoothpin_cache."""
    env = os.environ.get("SMOOTHPIN_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".smoothpin_cache"


def _canonical(obj, where="key"):
    """JSON-able form of a configuration value; raises ValueError for what cannot be hashed stably."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        v = float(obj)
        if not math.isfinite(v):
            raise ValueError(f"{where}: non-finite number {v} in the configuration; use a string")
        return v
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        digest = hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return {"__tensor__": digest.hexdigest(), "shape": list(t.shape), "dtype": str(t.dtype)}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: dictionary keys must be strings, got {k!r}")
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"{where}: cannot hash a {type(obj).__name__} stably; pass numbers, strings, "
                     "lists, dicts, tensors, dtypes or devices")


def _config_json(key, device, dtype):
    if not isinstance(key, dict):
        raise ValueError(f"key: expected a dict describing the computation, got {type(key).__name__}")
    from . import __version__
    full = {"config": _canonical(key), "smoothpin": __version__, "torch": torch.__version__,
            "device": str(torch.device(device)), "dtype": str(dtype)}
    return json.dumps(full, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_key(key, device="cpu", dtype=None):
    """SHA-256 hex digest of the canonical configuration (see the module docstring)."""
    dtype = dtype or torch.get_default_dtype()
    return hashlib.sha256(_config_json(key, device, dtype).encode()).hexdigest()


def _read(path, config):
    """The stored value, or None if the file is missing; deletes and returns None if damaged."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    ok = (len(blob) >= _HEADER and blob[:len(_MAGIC)] == _MAGIC
          and int.from_bytes(blob[len(_MAGIC):len(_MAGIC) + 8], "little") == len(blob) - _HEADER
          and hashlib.sha256(blob[_HEADER:]).digest() == blob[len(_MAGIC) + 8:_HEADER])
    if ok:
        try:
            entry = torch.load(io.BytesIO(blob[_HEADER:]), map_location="cpu", weights_only=True)
            ok = isinstance(entry, dict) and entry.get("config") == config
        except Exception:  # noqa: BLE001 - any unreadable payload is a damaged entry
            ok = False
    if not ok:
        path.unlink(missing_ok=True)
        return None
    return (entry["value"],)


def _write(path, payload):
    blob = (_MAGIC + len(payload).to_bytes(8, "little") + hashlib.sha256(payload).digest()
            + payload)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable; not possible on every platform
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return type(value)((k, _to(v, device)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


def cached(key, compute_fn, directory=None, device="cpu", dtype=None, refresh=False):
    """Returns compute_fn() from the cache entry of ``key`` (a dict), computing and storing it on a
    miss. device, dtype: part of the hashed configuration; tensors come back on ``device``.
    refresh: recompute and overwrite. The value returned on a miss is the stored one read back, so
    hits and misses return the same thing. Raises ValueError for a key that cannot be hashed
    stably; exceptions of compute_fn propagate (and nothing is written).
    """
    check_callable("compute_fn", compute_fn)
    dtype = dtype or torch.get_default_dtype()
    config = _config_json(key, device, dtype)
    digest = hashlib.sha256(config.encode()).hexdigest()
    directory = Path(directory) if directory is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest}.pt"
    if not refresh:
        hit = _read(path, config)
        if hit is not None:
            return _to(hit[0], device)
    value = compute_fn()
    buf = io.BytesIO()
    torch.save({"config": config, "value": _to(value, "cpu")}, buf)
    payload = buf.getvalue()
    _write(path, payload)
    entry = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    return _to(entry["value"], device)


def cached_training(key, net, train_fn, directory=None, refresh=False):
    """Trains ``net`` in place by ``train_fn(net)`` or loads its trained state from the cache.

    The hashed configuration is ``key`` (a dict: process, target, optimiser settings, seed...)
    plus the network's class and ``net.config()`` where it has one (else its parameter shapes),
    with the device and dtype of its parameters. On a miss train_fn(net) runs and the entry stores
    net.state_dict() and train_fn's return value; on a hit train_fn is not called and the stored
    state is loaded into ``net``. Returns train_fn's (stored) return value.
    Raises ValueError for a net without parameters or a key that cannot be hashed stably.
    """
    if not isinstance(net, torch.nn.Module) or next(net.parameters(), None) is None:
        raise ValueError("net: expected a torch.nn.Module with parameters")
    check_callable("train_fn", train_fn)
    if not isinstance(key, dict):
        raise ValueError(f"key: expected a dict describing the training, got {type(key).__name__}")
    p0 = next(net.parameters())
    arch = net.config() if callable(getattr(net, "config", None)) else {
        k: list(v.shape) for k, v in net.state_dict().items()}
    full = {"training": key, "net": type(net).__name__, "architecture": arch}

    def compute():
        result = train_fn(net)
        return {"state": net.state_dict(), "result": result}

    entry = cached(full, compute, directory=directory, device=p0.device, dtype=p0.dtype,
                   refresh=refresh)
    net.load_state_dict(entry["state"])
    return entry["result"]
