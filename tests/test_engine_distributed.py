"""Two gloo processes on CPU via torchrun: identical weights on both ranks afterwards, and the
evaluation counts every val image exactly once (5 val images over 2 ranks: an uneven split)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"


def test_two_gloo_ranks_agree_and_eval_sees_each_image_once(tmp_path, tiny_cache, tiny_config):
    cfg = tiny_config(
        tmp_path / "ddp.yaml",
        tiny_cache,
        {
            "data": {"builtin": {"num_val": 5}},
            "solver": {"max_iter": 3, "ims_per_batch": 2},
            "checkpoint": {"period": 0},
            "eval": {"final": True, "vis_images": 1},
            "log": {"period": 1},
        },
    )
    out, dump = tmp_path / "run", tmp_path / "ranks"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
        "SMALLDET_DUMP_RANK_WEIGHTS": str(dump),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(TRAIN), "--config", str(cfg), "--output", str(out), "device=cpu",
    ]  # fmt: skip
    # own session: on a timeout the whole group (torchrun and its workers) is killed
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("torchrun did not finish in 400 s:\n" + stderr[-4000:])
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]

    w0 = torch.load(dump / "rank0.pth", weights_only=True)
    w1 = torch.load(dump / "rank1.pth", weights_only=True)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # model_final.pth (written by rank 0) holds those same weights
    final = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(final[k], w0[k]) for k in w0)

    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["type"] == "eval"]
    assert len(evals) == 1
    assert evals[0]["num_images"] == 5 and evals[0]["num_unique_images"] == 5
    # rank 0 alone logs and checkpoints: one metrics line per iteration, one final model
    assert [r["iteration"] for r in rows if r["type"] == "train"] == [1, 2, 3]
    ckpt = torch.load(out / "model_0000003.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
