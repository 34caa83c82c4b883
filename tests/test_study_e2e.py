"""One real, tiny study end to end: ResNet-18 DC5, 2 iterations on 64 px images, in child
processes (train, then eval), then the report. The first attempt is killed (SIGKILL) right
after the checkpoint of iteration 1: the study reports the failure, and the next pass resumes
the run from that checkpoint and finishes it; a third pass skips it. The
multi-variant report (deltas, bootstrap CIs) is covered on hand-made runs in
test_study_report.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from detector.study import load_study, run_state, run_study, write_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_real_study(tmp_path, monkeypatch):
    study = {
        "name": "tiny",
        "output": str(tmp_path / "study"),
        "baseline": "dc5",
        "seeds": [0],
        "common": [
            "solver.max_iter=2",
            "solver.ims_per_batch=2",
            "solver.warmup_iters=1",
            "data.builtin.num_train=6",
            "data.builtin.num_val=2",
            "data.builtin.image_size=64",
            f"data.builtin.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "checkpoint.period=1",
            "checkpoint.best_metric=''",
            "eval.final=false",
            "log.tensorboard=false",
            "log.progress=false",
            "device=cpu",
        ],
        "variants": {
            "dc5": {"config": str(ROOT / "configs" / "faster_rcnn_r18_dc5.yaml")},
        },
        "bootstrap": 20,
    }
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(study))
    spec = load_study(p)
    (run,) = spec.runs()

    monkeypatch.setenv("SMALLDET_KILL_AT_ITER", "1")  # the trainer kills itself after iter 1
    (o,) = run_study(spec, echo=None)
    assert o.status == "failed" and "exit code -9" in o.message, o.log_tail
    assert run_state(run.run_dir) == "interrupted"
    monkeypatch.delenv("SMALLDET_KILL_AT_ITER")

    outcomes = run_study(spec, echo=None)
    logs = {o.run.key: o.message + "\n" + o.log_tail for o in outcomes}
    assert [o.status for o in outcomes] == ["ok"], logs
    assert outcomes[0].state_before == "interrupted"
    log = (run.run_dir / "study.log").read_text()
    assert log.count("--resume") == 1 and "(interrupted)" in log
    for r in spec.runs():
        assert run_state(r.run_dir) == "finished"
        ev = json.loads((r.run_dir / "study_eval.json").read_text())
        assert "AP_small" in ev["summary"] and ev["inference_s_per_img"] > 0
        assert ev["detections_from"] == "eval"  # eval.final=false: the trainer wrote none
        assert ev["model_info"]["output_stride"] == 16
        assert isinstance(json.loads((r.run_dir / "results_val.json").read_text()), list)
    agg = write_report(spec)
    md = (spec.output / "report.md").read_text()
    assert "## Size bin `small`" in md and "## Model facts" in md
    assert agg["facts"]["dc5"]["params"] > 1e6 and agg["facts"]["dc5"]["train_img_per_s"]
    assert (spec.output / "ap_by_size.png").is_file()
    # anchor coverage of the run's own training boxes, at the stride the run trained with
    cov = agg["anchor_coverage"]["dc5"]
    assert cov["strides"] == [16] and cov["bins"]["all"]["count"] > 0, cov
    assert "## Anchor coverage of the training boxes" in md
    assert sorted(x.name for x in (spec.output / "tb").iterdir()) == ["dc5_seed0"]
    # a second pass skips both runs
    assert [o.status for o in run_study(spec, echo=None)] == ["skipped"]
