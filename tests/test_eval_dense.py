"""Dense tiny objects: scoring presets (IoU thresholds, maxDets, model caps) and reports that say
when maxDets or the model's caps cut recall. Parity with pycocotools: tests/test_eval_parity.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from detector.cli.evaluate import main as evaluate_main
from detector.config import ConfigError, load_config
from detector.evaluation import eval_settings, evaluate

ROOT = Path(__file__).resolve().parents[1]
DOTA = "dota_devkit_example/annotations_coco_hbb.json"
# ship: 100 of its 531 boxes in P0706 survive maxDets 100 -> recall 100/531 = 0.188 at precision
# 1, so 19 of the 101 recall points (0.00 ... 0.18) score 1; the three other classes score 1
DOTA_AP_AT_100 = (19 / 101 + 3) / 4  # 0.797


@pytest.fixture(scope="module")
def dota(shared_data):
    """DOTA's example GT and the same boxes fed back as detections (score 1)."""
    path = shared_data / DOTA
    gt = json.loads(path.read_text())
    res = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in gt["annotations"]
    ]
    return path, res


def _checks(report) -> dict[str, dict]:
    return {c["key"]: c for c in report.to_dict()["recall_caps"]["checks"]}


def test_dota_gt_capped_at_max_dets_100_is_reported(dota):
    path, res = dota
    with pytest.warns(UserWarning, match=r"1 of 2 images hold more GT boxes of one class") as rec:
        r = evaluate(path, res, errors=False)
    assert "densest image (id 1) has 531 'ship' boxes, 536 in all" in str(rec[0].message)
    assert r.summary["AP"] == pytest.approx(DOTA_AP_AT_100, abs=1e-12)
    d = r.to_dict()
    assert d["recall_caps"] == {
        "max_dets": 100,
        "checks": [
            {
                "key": "max_dets",
                "value": 100,
                "per": "image and class",
                "images_over": 1,
                "cuts_recall": True,
            }
        ],
        "images_capped": 1,
    }
    assert any("--preset dense" in w for w in d["warnings"])
    md = r.markdown()
    assert "**Recall capped on 1 image(s)**" in md and "> warning: 1 of 2 images" in md


@pytest.mark.parametrize("preset", ["dense", "aitod"])
def test_dense_preset_reaches_ap_1(dota, preset):
    path, res = dota
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate(path, res, errors=False, preset=preset)
    assert r.max_dets == (1, 100, 1500) and r.preset == preset
    assert r.summary["AP"] == 1.0 and r.summary["AR@1500"] == 1.0
    assert r.to_dict()["recall_caps"]["images_capped"] == 0 and r.warnings == []
    assert r.to_dict()["params"]["preset"] == preset


def test_model_caps_below_max_dets_are_reported_with_the_images_they_cut(dota):
    path, res = dota
    caps = {"model.rpn.post_nms_top_n_test": 1000, "model.roi.detections_per_img": 100}
    with pytest.warns(UserWarning) as rec:
        r = evaluate(path, res, errors=False, preset="dense", model_caps=caps)
    # only the cap that cuts an image warns: 536 boxes > 100 detections, but < 1000 proposals
    assert len(rec) == 1 and str(rec[0].message).startswith(
        "model.roi.detections_per_img=100 caps the model at 100 detections per image, below "
        "the largest maxDets 1500: 1 of 2 images hold more GT boxes than that (the densest, "
        "id 1, has 536)"
    )
    checks = _checks(r)
    assert checks["model.roi.detections_per_img"] == {
        "key": "model.roi.detections_per_img",
        "value": 100,
        "per": "image",
        "below_max_dets": True,
        "images_over": 1,
        "cuts_recall": True,
    }
    post = checks["model.rpn.post_nms_top_n_test"]
    assert post["below_max_dets"] and post["images_over"] == 0 and not post["cuts_recall"]
    assert any("recall is not cut on this data" in w for w in r.warnings)
    assert r.to_dict()["recall_caps"]["images_capped"] == 1
    assert r.summary["AP"] == 1.0  # the caps describe the model; these results are the GT


def test_max_dets_counts_per_image_and_class_like_pycocotools():
    """150 boxes in one image, 50 per class: maxDets 100 cuts nothing (pycocotools keeps 100 per
    image *and class*), a model cap of 100 detections per image does."""
    anns = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": i % 3 + 1,
            "bbox": [(i % 15) * 10, (i // 15) * 10, 8, 8],
            "area": 64,
            "iscrowd": 0,
        }
        for i in range(150)
    ]
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.png"}],
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
    }
    res = [dict(image_id=1, category_id=a["category_id"], bbox=a["bbox"], score=1) for a in anns]
    with pytest.warns(UserWarning, match="150"):
        r = evaluate(gt, res, errors=False, model_caps={"model.roi.detections_per_img": 100})
    assert r.summary["AP"] == 1.0
    checks = _checks(r)
    assert checks["max_dets"]["images_over"] == 0
    assert checks["model.roi.detections_per_img"]["images_over"] == 1


def _iou_third():
    """One GT and one detection shifted by half its width: IoU 50/150 = 1/3."""
    gt = {
        "images": [{"id": 1, "width": 64, "height": 64, "file_name": "a.png"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    return gt, [{"image_id": 1, "category_id": 1, "bbox": [5, 0, 10, 10], "score": 0.9}]


def test_tinyperson_preset_reports_ap25():
    gt, res = _iou_third()
    r = evaluate(gt, res, errors=False, preset="tinyperson")
    assert list(r.iou_thrs) == [0.25, 0.5, 0.75] and r.max_dets == (1, 10, 200)
    # matched at 0.25 only: AP25 1, AP50 = AP75 = 0, AP their mean
    # (1.0 up to pycocotools' eps in tp / (tp + fp + eps), as in pycocotools)
    assert r.summary["AP25"] == pytest.approx(1.0, abs=1e-12)
    assert r.summary["AP50"] == 0.0 and r.summary["AP75"] == 0.0
    assert r.summary["AP"] == pytest.approx(1 / 3, abs=1e-12)
    assert r.summary["AP25_tiny3"] is None  # a 10 px box: tiny and tiny2, not tiny3
    assert r.summary["AP25_tiny2"] == pytest.approx(1.0, abs=1e-12)
    assert "| AP | AP25 | AP50 |" in r.markdown()
    assert r.to_dict()["bins"][0]["pr_curve_iou25"][0] == pytest.approx(1.0, abs=1e-12)
    ref = evaluate(gt, res, errors=False, preset="tinyperson", backend="pycocotools")
    assert np.array_equal(r.precision, ref.precision) and np.array_equal(r.recall, ref.recall)
    # explicit thresholds beat the preset's; without 0.25 there is no AP25 key at all
    r = evaluate(gt, res, errors=False, preset="tinyperson", iou_thrs=[0.5, 0.75])
    assert "AP25" not in r.summary and r.summary["AP"] == 0.0 and r.max_dets == (1, 10, 200)
    assert "AP25" not in evaluate(gt, res, errors=False).summary  # COCO's keys as before


# ------------------------------------------------------------------------------------ config


def test_config_preset_sets_evaluator_and_model_caps():
    cfg = load_config(None, ["eval.preset=aitod"])
    assert (cfg.eval.bins, cfg.eval.max_dets, cfg.eval.iou_thrs) == ("aitod", [1, 100, 1500], [])
    rpn, roi = cfg.model.rpn, cfg.model.roi
    assert (rpn.pre_nms_top_n_test, rpn.post_nms_top_n_test, roi.detections_per_img) == (
        3000,
        3000,
        1500,
    )
    s = eval_settings(cfg)
    assert s["bins"] == "aitod" and s["max_dets"] == (1, 100, 1500) and s["preset"] == "aitod"
    assert s["model_caps"] == {
        "model.rpn.pre_nms_top_n_test": 3000,
        "model.rpn.post_nms_top_n_test": 3000,
        "model.roi.detections_per_img": 1500,
    }
    # fpn: pre_nms_top_n_test counts per level, so it caps no image
    fpn = eval_settings(load_config(None, ["eval.preset=aitod", "model.variant=fpn"]))
    assert "model.rpn.pre_nms_top_n_test" not in fpn["model_caps"]
    tp = load_config(None, ["eval.preset=tinyperson"])
    assert tp.eval.iou_thrs == [0.25, 0.5, 0.75] and tp.eval.max_dets == [1, 10, 200]
    assert tp.model.roi.detections_per_img == 200 and tp.model.rpn.post_nms_top_n_test == 1000
    coco = load_config(None, ["eval.preset=coco"])
    assert coco.eval.max_dets == [1, 10, 100] and coco.model.roi.detections_per_img == 100


def test_config_keys_next_to_the_preset_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "eval": {"preset": "dense", "max_dets": [1, 10, 2000]},
                "model": {"roi": {"detections_per_img": 2500}},
            }
        )
    )
    cfg = load_config(path)
    assert cfg.eval.max_dets == [1, 10, 2000] and cfg.eval.bins == "coco"
    assert cfg.model.roi.detections_per_img == 2500 and cfg.model.rpn.post_nms_top_n_test == 3000
    # a preset given on the command line beats the file's keys (aerial_cars: [1, 10, 300], 300)
    cars = load_config(ROOT / "configs" / "aerial_cars.yaml", ["eval.preset=aitod"])
    assert cars.eval.max_dets == [1, 100, 1500] and cars.model.roi.detections_per_img == 1500


def test_config_cap_below_the_preset_max_dets_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"eval": {"preset": "aitod"}, "model": {"roi": {"detections_per_img": 300}}})
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: model.roi.detections_per_img=300 is below the largest ")
    assert "eval.max_dets 1500 of eval.preset='aitod'" in msg and "set it >= 1500" in msg
    with pytest.raises(ConfigError, match=r"eval.preset: .* did you mean 'aitod'"):
        load_config(None, ["eval.preset=aitd"])


# --------------------------------------------------------------------------------------- cli


def test_evaluate_cli_preset_flag(tmp_path, capsys):
    gt, res = _iou_third()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(res))
    base = ["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "dt.json")]
    out = tmp_path / "r.json"
    assert evaluate_main([*base, "--preset", "tinyperson", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["AP25"] == pytest.approx(1.0, abs=1e-12) and d["AP50"] == 0.0
    assert d["AP"] == pytest.approx(1 / 3, abs=1e-12)
    assert d["params"]["iou_thrs"] == [0.25, 0.5, 0.75] and d["params"]["max_dets"] == [1, 10, 200]
    args = [*base, "--preset", "tinyperson", "--iou-thrs", "0.5", "--json", str(out)]
    assert evaluate_main(args) == 0
    d = json.loads(out.read_text())
    assert "AP25" not in d and d["params"]["iou_thrs"] == [0.5] and d["params"]["preset"]
    capsys.readouterr()
    assert evaluate_main([*base, "--preset", "dens"]) == 2
    assert capsys.readouterr().err.startswith("error: --preset dens: unknown evaluation preset")


def test_evaluate_cli_checkpoint_honours_the_config_preset(dota, tmp_path, monkeypatch):
    path, res = dota
    calls = []

    def fake_run_model(args):
        calls.append(list(args.opts or []))
        return res, str(path), True

    monkeypatch.setattr("detector.cli.evaluate.run_model", fake_run_model)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"eval": {"preset": "dense"}}))
    ckpt = tmp_path / "m.pth"
    out = tmp_path / "r.json"
    base = ["--config", str(cfg), "--checkpoint", str(ckpt), "--no-errors", "--json", str(out)]
    assert evaluate_main(base) == 0
    d = json.loads(out.read_text())
    assert d["params"]["max_dets"] == [1, 100, 1500] and d["AP"] == 1.0
    assert {c["key"]: c["value"] for c in d["recall_caps"]["checks"]} == {
        "max_dets": 1500,
        "model.rpn.pre_nms_top_n_test": 3000,
        "model.rpn.post_nms_top_n_test": 3000,
        "model.roi.detections_per_img": 1500,
    }
    # --preset on the command line becomes eval.preset, so the model is built with its caps
    with pytest.warns(UserWarning):
        assert evaluate_main([*base, "--preset", "coco"]) == 0
    assert calls[-1] == ["eval.preset=coco"]
    d = json.loads(out.read_text())
    assert d["params"]["max_dets"] == [1, 10, 100]
    assert d["AP"] == pytest.approx(DOTA_AP_AT_100, abs=1e-12)
    assert _dict_checks(d)["model.roi.detections_per_img"]["images_over"] == 1


def _dict_checks(d: dict) -> dict[str, dict]:
    return {c["key"]: c for c in d["recall_caps"]["checks"]}


def test_trainer_eval_honours_the_config_preset(dota, monkeypatch, tmp_path):
    """``Trainer.evaluate`` on a stand-in trainer (no model, no training): the inference returns
    the DOTA ground truth, the scoring is what the config's eval.preset says."""
    from types import SimpleNamespace

    from detector.engine import trainer as tr

    path, res = dota
    monkeypatch.setattr(tr, "predict_dataset", lambda *a, **k: (res, [1, 2]))
    seen = {}
    fake = SimpleNamespace(
        cfg=load_config(None, ["eval.preset=dense"]),
        val_ds=SimpleNamespace(ann_file=path),
        val_loader=[],
        model=None,
        device="cpu",
        amp_dtype=None,
        main=True,
        logger=SimpleNamespace(
            eval_report=lambda report, it: seen.update(report=report),
            record=lambda *a: None,
            flush=lambda: None,
        ),
        output_dir=str(tmp_path),
        _draw=lambda it, results: None,
        _update_best=lambda summary, it: None,
        _eval_times=[],
    )
    summary = tr.Trainer.evaluate(fake, 7)
    r = seen["report"]
    assert r.max_dets == (1, 100, 1500) and r.preset == "dense"
    assert summary["AP"] == r.summary["AP"] == 1.0
    caps = {c["key"]: c["value"] for c in r.recall_caps["checks"]}
    assert caps["model.roi.detections_per_img"] == 1500 and r.recall_caps["images_capped"] == 0
    assert len(json.loads((tmp_path / "results_val_0000007.json").read_text())) == len(res)
