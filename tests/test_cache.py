"""Tests of smoothpin.cache: hits and misses by configuration, damaged entries detected and
recomputed (never loaded), atomic writes, failing computations leave entries intact."""
import os
import subprocess
import sys
import time

import pytest
import torch

import smoothpin
from smoothpin.cache import cache_key, cached, default_cache_dir
from smoothpin.nets import ScoreMLP


class Counter:
    """compute_fn that returns a different tensor on every call, so a reload is distinguishable
    from a recomputation."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"value": torch.full((3,), float(self.calls), dtype=torch.float64), "calls": self.calls}


def _entry(d):
    files = [f for f in os.listdir(d) if f.endswith(".pt")]
    assert len(files) == 1
    return os.path.join(d, files[0])


def test_miss_then_hit_and_changed_config_misses(tmp_path):
    f = Counter()
    key = {"width": 32, "lr": 1e-3, "widths": [1, 2], "nested": {"seed": 0}}
    a = cached(key, f, directory=tmp_path)
    b = cached(dict(reversed(list(key.items()))), f, directory=tmp_path)  # key order is irrelevant
    assert f.calls == 1 and torch.equal(a["value"], b["value"]) and b["calls"] == 1
    cached({**key, "lr": 2e-3}, f, directory=tmp_path)
    assert f.calls == 2
    cached(key, f, directory=tmp_path, dtype=torch.float16)  # default dtype is float32
    cached(key, f, directory=tmp_path, device="meta")
    assert f.calls == 4
    assert cache_key(key) != cache_key({**key, "nested": {"seed": 1}})
    cached(key, f, directory=tmp_path, refresh=True)
    assert f.calls == 5


def test_library_version_is_part_of_the_key(tmp_path, monkeypatch):
    f = Counter()
    cached({"a": 1}, f, directory=tmp_path)
    monkeypatch.setattr(smoothpin, "__version__", smoothpin.__version__ + ".dev1")
    cached({"a": 1}, f, directory=tmp_path)
    assert f.calls == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_payload", "empty", "header_only"])
def test_damaged_entry_is_detected_deleted_and_recomputed(tmp_path, damage):
    f = Counter()
    cached({"a": 1}, f, directory=tmp_path)
    path = _entry(tmp_path)
    blob = open(path, "rb").read()
    if damage == "truncate":  # a write killed half way (without the atomic rename)
        blob = blob[: len(blob) // 2]
    elif damage == "garbage":
        blob = os.urandom(len(blob))
    elif damage == "flip_payload":
        i = len(blob) - 20
        blob = blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1:]
    elif damage == "empty":
        blob = b""
    else:
        blob = blob[:56]
    with open(path, "wb") as fh:
        fh.write(blob)
    out = cached({"a": 1}, f, directory=tmp_path)
    assert f.calls == 2 and out["calls"] == 2  # recomputed, the damaged file was not loaded
    assert cached({"a": 1}, f, directory=tmp_path)["calls"] == 2  # and the new entry is good


def test_entry_under_another_key_is_not_loaded(tmp_path):
    f = Counter()
    cached({"a": 1}, f, directory=tmp_path)
    src = _entry(tmp_path)
    dst = os.path.join(tmp_path, cache_key({"a": 2}) + ".pt")
    os.replace(src, dst)  # valid checksum, wrong configuration inside
    assert cached({"a": 2}, f, directory=tmp_path)["calls"] == 2


def test_failing_computation_leaves_existing_entry_intact(tmp_path, monkeypatch):
    f = Counter()
    cached({"a": 1}, f, directory=tmp_path)
    before = open(_entry(tmp_path), "rb").read()

    def boom():
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError):
        cached({"a": 1}, boom, directory=tmp_path, refresh=True)
    # a crash between writing the temporary file and the rename
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        cached({"a": 1}, f, directory=tmp_path, refresh=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(_entry(tmp_path))]  # no temp files
    assert open(_entry(tmp_path), "rb").read() == before
    assert cached({"a": 1}, f, directory=tmp_path)["calls"] == 1


_KILLED_WRITER = """
import sys, time, torch, smoothpin.cache as c
real = c.os.fdopen
class Half:  # writes half the bytes, flushes them to the file, then hangs inside write()
    def __init__(self, f): self.f = f
    def __enter__(self): return self
    def __exit__(self, *a): return self.f.__exit__(*a)
    def write(self, blob):
        self.f.write(blob[: len(blob) // 2]); self.f.flush(); time.sleep(600)
    def __getattr__(self, k): return getattr(self.f, k)
c.os.fdopen = lambda fd, mode: Half(real(fd, mode))
c.cached({"big": 1}, lambda: {"x": torch.zeros(1000, dtype=torch.float64)}, directory=sys.argv[1])
"""


def test_process_killed_during_write_never_yields_a_bad_entry(tmp_path):
    # A child process starts writing an entry and is killed with SIGKILL half way through the bytes
    # (it is made to hang there, so the kill lands deterministically; a crash between the complete
    # temporary file and the rename is simulated in-process above). Afterwards no entry exists, the
    # leftover temporary file is ignored, and the next call recomputes and stores a good entry.
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 300  # importing torch on a loaded machine can be slow
        while time.monotonic() < deadline and p.poll() is None:
            tmp = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
            if tmp and os.path.getsize(os.path.join(tmp_path, tmp[0])) > 0:
                break
            time.sleep(0.02)
        time.sleep(0.2)  # let the child reach its hang point
        assert p.poll() is None, "the writer exited before it could be killed"
        p.kill()
    finally:
        p.wait()
    names = os.listdir(tmp_path)
    assert not [n for n in names if n.endswith(".pt")] and len(names) == 1  # only the .tmp is left
    f = Counter()
    out = cached({"big": 1}, f, directory=tmp_path)
    assert f.calls == 1 and out["calls"] == 1
    assert cached({"big": 1}, f, directory=tmp_path)["calls"] == 1 and f.calls == 1


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ScoreMLP(2, 8, 2).double()
    state = cached({"net": "mlp"}, lambda: net.state_dict(), directory=tmp_path)
    state = cached({"net": "mlp"}, lambda: None, directory=tmp_path)
    other = ScoreMLP(2, 8, 2).double()
    other.load_state_dict(state)
    x = torch.randn(4, 2, dtype=torch.float64)
    assert torch.equal(net(x, 0.5), other(x, 0.5))


def test_tensor_in_key_and_bad_keys(tmp_path):
    f = Counter()
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    cached({"w": w}, f, directory=tmp_path)
    cached({"w": w.clone()}, f, directory=tmp_path)
    cached({"w": torch.tensor([0.4, 0.6], dtype=torch.float64)}, f, directory=tmp_path)
    assert f.calls == 2
    with pytest.raises(ValueError, match="key"):
        cached({"f": lambda: 0}, f, directory=tmp_path)
    with pytest.raises(ValueError, match="key"):
        cached({"x": float("nan")}, f, directory=tmp_path)
    with pytest.raises(ValueError, match="key"):
        cached([1, 2], f, directory=tmp_path)


def test_default_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOOTHPIN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    cached({"a": 1}, Counter())
    assert len(os.listdir(tmp_path / "c")) == 1
    monkeypatch.delenv("SMOOTHPIN_CACHE")
    assert default_cache_dir().name == ".smoothpin_cache"


def test_cached_training_trains_once_and_restores_the_network(tmp_path):
    import smoothpin as sp
    mix = sp.Gaussian(torch.zeros(2, dtype=torch.float64), 1.0)
    calls = []

    def train(net):
        calls.append(1)
        return sp.train_regression(net, sp.OU(T=1.0), mix, steps=5, batch=8, progress=False)

    def fresh(width=6):
        torch.manual_seed(0)
        return ScoreMLP(2, width, 1).double()

    key = {"process": "OU(T=1)", "target": "N(0, I)", "steps": 5, "seed": 0}
    a = fresh()
    la = sp.cached_training(key, a, train, directory=tmp_path)
    b = fresh()
    lb = sp.cached_training(key, b, train, directory=tmp_path)  # a hit: train is not called
    assert len(calls) == 1 and torch.equal(la, lb)
    x = torch.randn(4, 2, dtype=torch.float64)
    assert torch.equal(a(x, 0.3), b(x, 0.3)) and not torch.equal(fresh()(x, 0.3), b(x, 0.3))
    sp.cached_training({**key, "steps": 6}, fresh(), train, directory=tmp_path)  # config changed
    sp.cached_training(key, fresh(width=7), train, directory=tmp_path)  # architecture changed
    sp.cached_training(key, fresh().float(), train, directory=tmp_path)  # dtype changed
    assert len(calls) == 4
    with pytest.raises(ValueError, match="net"):
        sp.cached_training(key, torch.nn.ReLU(), train, directory=tmp_path)
