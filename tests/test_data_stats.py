"""tools/dataset_stats.py: per-bin and per-class counts, density warning, histogram PNG."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from detector.data import generate_dataset
from detector.data.stats import compute_stats, dataset_stats
from detector.utils.bins import get_bins

TOOL = Path(__file__).resolve().parents[1] / "tools" / "dataset_stats.py"


def _tool():
    spec = importlib.util.spec_from_file_location("dataset_stats_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stats_of_generated_set(tmp_path, capsys):
    images, ann = generate_dataset(tmp_path / "d", 5, 128, seed=1)
    data = json.loads(ann.read_text())
    out_png, out_json = tmp_path / "hist.png", tmp_path / "stats.json"
    rc = _tool().main(
        [
            "--ann",
            str(ann),
            "--images",
            str(images),
            "--check",
            "--bins",
            "aitod",
            "--plot",
            str(out_png),
            "--json",
            str(out_json),
            "--max-dets",
            "5",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    stats = json.loads(out_json.read_text())
    assert [b["name"] for b in stats["bins"]] == [b.name for b in get_bins("aitod")[1:]]
    assert sum(stats["per_bin"].values()) == len(data["annotations"]) == stats["annotations"]
    assert sum(r["total"] for r in stats["per_class"].values()) == len(data["annotations"])
    per_image = {}
    for a in data["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert stats["objects_per_image"]["max"] == max(per_image.values())
    assert "verytiny [2, 8]" in text and "objects per image: mean" in text
    assert (
        f"has {max(per_image.values())} objects, more than the evaluation's largest maxDets=5"
        in text
    )
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert stats["image_problems"] == []


def test_stats_flag_missing_images_and_bad_area(tmp_path, shared_data):
    images, ann = generate_dataset(tmp_path / "d", 2, 64, seed=1)
    (images / "000001.png").unlink()
    stats = dataset_stats(ann, images=images)
    assert any("000001.png'): file not found" in w for w in stats["warnings"])
    sahi = shared_data / "coco_eval_reference" / "sahi_visdrone_pair" / "dataset.json"
    bad = dataset_stats(sahi)
    assert bad["per_bin"]["large"] == 249 and "disagrees" in bad["warnings"][0]
    fixed = dataset_stats(sahi, bad_area="recompute")
    assert fixed["per_bin"]["large"] < 10


def test_tool_reports_errors_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert _tool().main(["--ann", str(bad), "--plot", ""]) == 2
    assert "malformed JSON at line 1" in capsys.readouterr().err


def test_compute_stats_custom_edges():
    data = {
        "images": [{"id": 1, "file_name": "a", "width": 10, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25}
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    s = compute_stats(data, bins="0,8,inf")
    assert s["per_bin"] == {"0-8": 1, "8-inf": 0}
