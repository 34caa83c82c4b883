"""The study report on hand-made run directories, evaluated for real on a tiny hand-built GT."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from detector.evaluation import evaluate
from detector.study import load_study, write_report
from detector.study.collect import collect

SIDES = [6, 10, 14, 20, 28, 40, 60, 90, 120]  # px: every COCO bin gets objects


def _gt() -> dict:
    rng = random.Random(0)
    images, anns = [], []
    for i in range(1, 13):
        images.append({"id": i, "file_name": f"{i}.png", "width": 400, "height": 400})
        for j in range(4):
            s = SIDES[(i + j) % len(SIDES)]
            x, y = rng.uniform(0, 400 - s), rng.uniform(0, 400 - s)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1 + j % 2,
                    "bbox": [x, y, s, s],
                    "area": s * s,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}]
    return {"images": images, "annotations": anns, "categories": cats}


def _dets(gt: dict, quality: float, seed: int) -> list[dict]:
    """Jittered copies of the GT (worse localisation at lower quality) plus background boxes."""
    rng = random.Random(seed)
    out = []
    for a in gt["annotations"]:
        if rng.random() > quality:
            continue  # missed
        x, y, w, h = a["bbox"]
        j = (1 - quality) * 0.6
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "score": rng.random(),
                "bbox": [x + rng.gauss(0, j) * w, y + rng.gauss(0, j) * h, w, h],
            }
        )
    for im in gt["images"]:
        for _ in range(3):
            s = rng.uniform(5, 80)
            out.append(
                {
                    "image_id": im["id"],
                    "category_id": rng.choice([1, 2]),
                    "score": rng.random() * 0.5,
                    "bbox": [rng.uniform(0, 300), rng.uniform(0, 300), s, s],
                }
            )
    return out


def _fake_run(run_dir: Path, gt_path: Path, dets: list[dict], seed: int, variant: str) -> None:
    run_dir.mkdir(parents=True)
    report = evaluate(str(gt_path), dets, bins="coco", max_dets=[1, 10, 100])
    (run_dir / "results_val.json").write_text(json.dumps(dets))
    (run_dir / "model_final.pth").write_text("x")
    (run_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"type": "train", "iteration": i, "img_per_s": 20.0 + i, "memory_mb": 500.0})
            + "\n"
            for i in range(4)
        )
    )
    settings = {
        "resolved": {
            "model": {"variant": variant, "backbone": {"depth": 18}},
            "solver": {"lr": 0.02, "max_iter": 10},
            "seed": seed,
            "eval": {"bins": "coco", "max_dets": [1, 10, 100]},
        }
    }
    (run_dir / "study_run.json").write_text(json.dumps(settings))
    (run_dir / "study_eval.json").write_text(
        json.dumps(
            {
                "summary": report.summary,
                "eval": report.to_dict(),
                "gt_path": str(gt_path),
                "num_images": 12,
                "inference_s_per_img": 0.05,
                "peak_memory": {"rss_mb": 800.0},
                "model_info": {
                    "params": 11e6,
                    "flops": 3.2e9,
                    "output_stride": 16,
                    "receptive_field": {"layer4": {"rf": 595, "jump": 16}},
                    "input_size": [400, 400],
                },
                "device": "cpu",
            }
        )
    )


@pytest.fixture()
def study(tmp_path: Path):
    gt = _gt()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    (tmp_path / "c.yaml").write_text("model:\n  variant: c5\n")
    data = {
        "name": "hand",
        "output": str(tmp_path / "out"),
        "baseline": "base",
        "seeds": [0, 1],
        "variants": {"base": "c.yaml", "better": "c.yaml", "broken": "c.yaml"},
        "bootstrap": 50,
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data))
    spec = load_study(p)
    for r in spec.runs():
        if r.variant == "broken":
            if r.seed == 0:
                r.run_dir.mkdir(parents=True)
                (r.run_dir / "study_status.json").write_text(
                    json.dumps(
                        {
                            "status": "failed",
                            "message": "training failed: exit code 1",
                            "phase": "train",
                            "attempts": 2,
                            "log_tail": "Traceback ...\nRuntimeError: boom",
                        }
                    )
                )
            continue
        q = 0.6 if r.variant == "base" else 0.95
        _fake_run(r.run_dir, gt_path, _dets(gt, q, 10 * r.seed + len(r.variant)), r.seed, r.variant)
    return spec


def test_report_tables_plots_and_tensorboard(study):
    agg = write_report(study)
    out = Path(study.output)
    md = (out / "report.md").read_text()
    # one table per size bin, with mean ± std and deltas
    for b in ("all", "small", "medium", "large"):
        assert f"## Size bin `{b}`" in md
    assert agg["bins"] == ["all", "small", "medium", "large"]
    assert "| AP | ΔAP | AP50 | ΔAP50 | AP75 | ΔAP75 | AR@100 | ΔAR@100 |" in md
    row = agg["table"]["better"]["metrics"]["AP_small"]
    assert row["n"] == 2 and row["std"] is not None and row["delta"] > 0
    base = agg["table"]["base"]["metrics"]["AP"]
    assert abs(base["mean"] - sum(collect_values(study, "base", "AP")) / 2) < 1e-12
    assert agg["table"]["broken"]["seeds_done"] == []
    # errors side by side (TIDE dAP from the evaluator) and model facts
    assert "## Error analysis" in md and "Loc" in md and "Missed" in md
    assert "| better | 11.00 | 3.20 | 400×400 | 16 | 595 | 22 | 0.05 |" in md
    # failed / missing runs with their log tail
    assert "broken/seed0 failed" in md and "RuntimeError: boom" in md
    assert "broken/seed1: not run yet" in md
    # plots and TensorBoard HParams: one sub-run per finished run
    assert (out / "ap_by_size.png").stat().st_size > 1000
    assert (out / "localisation_small.png").is_file()
    assert "![ap_by_size.png](ap_by_size.png)" in md
    subruns = sorted(p.name for p in (out / "tb").iterdir())
    assert subruns == ["base_seed0", "base_seed1", "better_seed0", "better_seed1"]
    assert all(list((out / "tb" / s).glob("events.out.tfevents.*")) for s in subruns)
    assert json.loads((out / "report.json").read_text())["baseline"] == "base"
    # rebuilding the report gives the same TensorBoard runs (no duplicates)
    write_report(study)
    assert sorted(p.name for p in (out / "tb").iterdir()) == subruns
    assert all(len(list((out / "tb" / s).glob("events.*"))) == 1 for s in subruns)


def collect_values(spec, variant, key):
    return [
        r["eval"]["summary"][key] for r in collect(spec) if r["variant"] == variant and r["eval"]
    ]


def test_bootstrap_ci(study):
    pytest.importorskip("detector.evaluation.bootstrap")
    agg = write_report(study, tensorboard=False, plots=False)
    entry = agg["bootstrap"]["variants"]["better"]
    assert entry["seeds"] == [0, 1] and not entry["note"], entry
    d, lo, hi = entry["ci"]["AP"]
    assert lo <= d <= hi and lo > 0  # clearly better on every image
    # the point value is the mean of the per-seed deltas, as in the tables
    assert abs(d - agg["table"]["better"]["metrics"]["AP"]["delta"]) < 1e-9
    assert set(entry["ci"]) >= {"AP_small", "AP50_medium", "AR_large@100"}
    md = (Path(study.output) / "report.md").read_text()
    assert "[+" in md


def test_train_facts_read_the_trainers_train_rows_only(tmp_path):
    """``img_per_s``/``memory_mb`` of the ``train`` rows, as the trainer writes them; the first
    window (warm-up) is left out, ``eval``/``final`` rows, untyped rows and the strings that
    metrics.jsonl writes for non-finite values are ignored."""
    from detector.study.collect import train_facts

    rows = [
        {"type": "train", "iteration": 20, "img_per_s": 1.0, "memory_mb": 100.0},
        {"type": "train", "iteration": 40, "img_per_s": 10.0, "memory_mb": 300.0},
        {"type": "train", "iteration": 60, "img_per_s": 30.0, "memory_mb": "nan"},
        {"type": "train", "iteration": 80, "img_per_s": 20.0, "memory_mb": 200.0},
        {"type": "eval", "iteration": 80, "img_per_s": 999.0, "memory_mb": 9999.0},
        {"iteration": 80, "img_per_s": 999.0, "memory_mb": 9999.0},
        {"type": "final", "iteration": 80, "AP": 0.5},
    ]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"type": "train", "img_'  # cut by a crash
    )
    assert train_facts(tmp_path) == {"img_per_s": 20.0, "memory_mb": 300.0}
    assert train_facts(tmp_path / "nowhere") == {"img_per_s": None, "memory_mb": None}


def test_variant_with_fewer_seeds_pairs_only_its_own(tmp_path):
    """A variant that runs only seed 0 is compared with the baseline's seed 0 alone, and its
    missing seeds are not reported as 'not run yet'."""
    pytest.importorskip("detector.evaluation.bootstrap")
    gt = _gt()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    (tmp_path / "c.yaml").write_text("model:\n  variant: c5\n")
    data = {
        "output": str(tmp_path / "out"),
        "baseline": "base",
        "seeds": [0, 1],
        "variants": {"base": "c.yaml", "one": {"config": "c.yaml", "seeds": [0]}},
        "bootstrap": 20,
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data))
    spec = load_study(p)
    dets = {}
    for r in spec.runs():
        q = 0.6 if r.variant == "base" else 0.95
        dets[r.key] = _dets(gt, q, 10 * r.seed + len(r.variant))
        _fake_run(r.run_dir, gt_path, dets[r.key], r.seed, r.variant)
    agg = write_report(spec, tensorboard=False, plots=False)
    row = agg["table"]["one"]
    assert row["seeds_done"] == [0] and row["metrics"]["AP"]["n"] == 1
    ap = {
        k: evaluate(str(gt_path), d, bins="coco", max_dets=[1, 10, 100]).summary["AP"]
        for k, d in dets.items()
    }
    assert abs(row["metrics"]["AP"]["delta"] - (ap["one/seed0"] - ap["base/seed0"])) < 1e-9
    assert agg["bootstrap"]["variants"]["one"]["seeds"] == [0]
    assert "one/seed1" not in (Path(spec.output) / "report.md").read_text()
