"""Shared test fixtures: where the real data lives, and the tiny training runs.

Test modules share helpers only through fixtures here, never by importing each other (that
needs ``tests/`` on ``sys.path`` and breaks when a module is run alone or renamed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SMALLDET_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets next to the project (../shared/data); skip with the reason if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data not found at {SHARED_DATA}: it lives next to the project root as "
            "../shared/data (set SMALLDET_SHARED_DATA to point elsewhere)"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """CI has 2 cores: one intra-op thread per test process avoids oversubscription."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# A detector small enough for a few CPU iterations per second: 64 px images, R18 DC5 with GN.
TINY = {
    "_base_": str(REPO_ROOT / "configs" / "faster_rcnn_r18_dc5.yaml"),
    "deterministic": True,
    "model": {
        "backbone": {"gn_groups": 8, "hdc_check": "off", "reduce_channels": 64},
        "anchors": {"sizes": [8, 16, 32], "aspect_ratios": [1.0]},
        "rpn": {
            "pre_nms_top_n_train": 200,
            "post_nms_top_n_train": 100,
            "pre_nms_top_n_test": 100,
            "post_nms_top_n_test": 50,
            "batch_size_per_image": 64,
        },
        "roi": {"batch_size_per_image": 32, "representation_size": 64},
    },
    "data": {"num_workers": 0, "builtin": {"num_train": 8, "num_val": 4, "image_size": 64}},
    "solver": {"max_iter": 6, "ims_per_batch": 2, "warmup_iters": 2, "lr": 0.01},
    "checkpoint": {"period": 2, "keep_last": 2},
    "eval": {"period": 0, "final": False, "vis_images": 0},
    "log": {"period": 2, "progress": False},
}


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One built-in dataset cache for the whole session: generated once, reused by every run."""
    return tmp_path_factory.mktemp("smalldet_cache")


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(path, cache_dir, extra=None)`` writes the tiny config (deep-merged with
    ``extra``) to ``path`` and returns it."""
    from detector.config.loader import deep_merge

    def write(path: Path, cache_dir: Path, extra: dict | None = None) -> Path:
        data = deep_merge(TINY, {"data": {"builtin": {"cache_dir": str(cache_dir)}}})
        data = deep_merge(data, extra or {})
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture(scope="session")
def run_train():
    """``run_train(cfg_path, out, *flags, env=None, timeout=300)``: tools/train.py in a
    subprocess (the real exit code and signal handling), output captured."""

    def run(cfg_path: Path, out: Path, *args: str, env: dict | None = None, timeout=300):
        full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
        train = REPO_ROOT / "tools" / "train.py"
        return subprocess.run(
            [sys.executable, str(train), "--config", str(cfg_path), "--output", str(out), *args],
            cwd=REPO_ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
