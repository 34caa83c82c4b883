"""--categories: scoring a subset of classes equals pycocotools with ``params.catIds``."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import pytest

from detector.cli.compare import main as compare_main
from detector.cli.evaluate import main as evaluate_main
from detector.evaluation.api import evaluate
from detector.evaluation.coco_io import EvalInputError, restrict_categories
from detector.evaluation.synthetic import make_dataset


@pytest.fixture(scope="module")
def data():
    return make_dataset(150, seed=3, n_cats=4, crowd_frac=0.05, empty_frac=0.1)


def test_subset_matches_pycocotools_catids(data):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, res = data
    keep = [gt["categories"][1]["id"], gt["categories"][3]["id"]]
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(res)), "bbox")
        ev.params.catIds = keep
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = [gt["categories"][1]["name"], str(keep[1])]  # a name and an id both work
    sub_gt, sub_res = restrict_categories(gt, res, names)
    assert {c["id"] for c in sub_gt["categories"]} == set(keep)
    assert len(sub_gt["images"]) == len(gt["images"])  # images without those classes still count
    flat = evaluate(sub_gt, sub_res, errors=False).to_dict()  # flat keys at the top level
    ours = [flat[k] for k in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")]
    ours += [flat[k] for k in ("AR@1", "AR@10", "AR@100")]
    assert ours == pytest.approx(list(ev.stats[:9]), abs=1e-12)
    # and it differs from scoring every class, so the filter did something
    assert abs(evaluate(gt, res, errors=False).to_dict()["AP"] - flat["AP"]) > 1e-3


def test_unknown_category_names_the_choices(data):
    gt, res = data
    with pytest.raises(EvalInputError, match=r"unknown category 'lorry'.*Fix: use a name or id"):
        restrict_categories(gt, res, ["lorry"])


def test_cli_categories(tmp_path, data, capsys):
    gt, res = data
    g, r = tmp_path / "gt.json", tmp_path / "res.json"
    g.write_text(json.dumps(gt))
    r.write_text(json.dumps(res))
    name = gt["categories"][0]["name"]
    out = tmp_path / "cmp.json"
    assert (
        evaluate_main(["--gt", str(g), "--results", str(r), "--categories", name, "--no-errors"])
        == 0
    )
    assert (
        compare_main(
            ["--gt", str(g), str(r), str(r), "--categories", name, "--n", "20", "--json", str(out)]
        )
        == 0
    )
    ap = evaluate(*restrict_categories(gt, res, [name]), errors=False).to_dict()["AP"]
    saved = json.loads(out.read_text())["metrics"]["AP"]
    assert saved["res"]["value"] == pytest.approx(ap, abs=1e-12)
    assert evaluate_main(["--gt", str(g), "--results", str(r), "--categories", "lorry"]) == 2
    assert "unknown category 'lorry'" in capsys.readouterr().err
