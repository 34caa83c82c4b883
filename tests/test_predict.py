"""``smalldet predict``: image reading (EXIF, 16-bit, RGBA, grayscale), input listing, the
folder pipeline with a corrupt file, atomic output, drawing, and ``smalldet evaluate`` scoring
the results file by file name and running sliced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detector.cli.evaluate import main as evaluate_main
from detector.cli.evaluate import results_by_file_name
from detector.cli.predict import main as predict_main
from detector.data.images import (
    ImageInputError,
    ImageReadError,
    list_images,
    read_image,
)

# ----------------------------------------------------------------------------- image reading


def test_exif_orientation_is_applied(tmp_path):
    # stored 4 wide x 2 high, red at the top-left; orientation 6 = shown rotated 90 deg
    # clockwise: 2 wide x 4 high, the red pixel at the top-right
    arr = np.zeros((2, 4, 3), np.uint8)
    arr[0, 0] = [255, 0, 0]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rot.png", exif=exif)
    img = read_image(tmp_path / "rot.png")
    assert tuple(img.shape) == (3, 4, 2)
    assert img[:, 0, 1].tolist() == [255, 0, 0] and int(img[:, 0, 0].sum()) == 0


def test_16_bit_is_scaled_by_its_range(tmp_path):
    arr = np.array([[0, 65535, 257 * 100, 1000]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    img = read_image(tmp_path / "deep.png")
    # 1000 / 65535 * 255 = 3.9 -> 4: by the 16-bit range, not stretched to the image's maximum
    assert img[0, 0].tolist() == [0, 255, 100, 4] and torch.equal(img[0], img[2])


def test_float_tiff_in_0_1_is_scaled(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[1, 0].tolist() == [0, 128, 255]


def test_rgba_and_grayscale_become_rgb(tmp_path):
    Image.fromarray(np.array([[[10, 20, 30, 0]]], np.uint8), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.array([[7, 9]], np.uint8), "L").save(tmp_path / "g.jpg", quality=100)
    assert read_image(tmp_path / "a.png")[:, 0, 0].tolist() == [10, 20, 30]
    g = read_image(tmp_path / "g.jpg")
    assert g.shape[0] == 3 and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])


def test_corrupt_file_names_itself(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_list_images_folders_globs_and_files(tmp_path):
    for rel in ("a.png", "sub/b.jpg", ".hidden/c.png", "notes.txt", "out/d.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    names = [e.name for e in list_images([str(tmp_path)], exclude=tmp_path / "out")]
    assert names == ["a.png", "sub/b.jpg"]
    assert [e.name for e in list_images([str(tmp_path / "**" / "*.jpg")])] == ["sub/b.jpg"]
    assert [e.name for e in list_images([str(tmp_path / "sub" / "b.jpg")])] == ["b.jpg"]
    with pytest.raises(ImageInputError, match="no such file"):
        list_images([str(tmp_path / "missing.png")])
    (tmp_path / "b.jpg").write_bytes(b"y")
    with pytest.raises(ImageInputError, match="'b.jpg'"):
        list_images([str(tmp_path / "b.jpg"), str(tmp_path / "sub" / "b.jpg")])


# ------------------------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def tiny_run(tiny_config, tiny_cache, tmp_path_factory):
    """A run directory with a random-weight tiny model_final.pth and its config.yaml."""
    from detector.config import load_config
    from detector.config.loader import save_config
    from detector.engine.checkpoint import atomic_save, model_file
    from detector.models import build_detector

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(tiny_config(run / "tiny.yaml", tiny_cache), ["model.num_classes=5"])
    torch.manual_seed(0)
    model = build_detector(cfg, num_classes=5)
    atomic_save(model_file(model.state_dict(), cfg, 5, 0), run / "model_final.pth")
    save_config(cfg, run / "config.yaml")
    return run


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(folder / "one.png")
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / "sub/two.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def _predict(run, out, *inputs, extra=()):
    argv = ["--checkpoint", str(run / "model_final.pth"), "--output", str(out), "--workers", "0"]
    return predict_main([*argv, "--no-progress", *extra, *map(str, inputs)])


def test_folder_with_a_corrupt_image(tiny_run, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(tiny_run, out, images, extra=["--draw", "--draw-score", "0"]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 images could not be read" in err
    doc = json.loads((out / "results.json").read_text())
    assert [(im["file_name"], im["width"], im["height"]) for im in doc["images"]] == [
        ("one.png", 80, 64),
        ("sub/two.jpg", 64, 48),
    ]
    assert [f["file_name"] for f in doc["failed"]] == ["broken.png"]
    assert [c["name"] for c in doc["categories"]][:2] == ["circle", "square"]
    assert doc["annotations"] and {a["image_id"] for a in doc["annotations"]} <= {1, 2}
    a = doc["annotations"][0]
    assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], rel=1e-3)
    drawn = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*.*"))
    assert drawn == ["images/one.png", "images/sub/two.jpg"]
    assert Image.open(out / "images/one.png").size == (80, 64)


def test_sliced_predict_writes_its_settings(tiny_run, images, tmp_path):
    out = tmp_path / "out"
    good = [images / "one.png", images / "sub" / "two.jpg"]
    flags = ["--slice", "32", "--overlap", "0.25", "--merge", "nmm", "--batch-size", "4"]
    assert _predict(tiny_run, out, *good, extra=flags) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["info"]["slicing"]["size"] == 32 and doc["info"]["slicing"]["batch_size"] == 4
    assert [im["file_name"] for im in doc["images"]] == ["one.png", "two.jpg"]
    for a in doc["annotations"]:
        im = doc["images"][a["image_id"] - 1]
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= im["width"] + 1e-3 and y + h <= im["height"] + 1e-3


def test_output_is_never_half_written(tiny_run, images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _predict(tiny_run, out, images / "one.png") == 0
    before = (out / "results.json").read_bytes()

    def broken_dump(obj, f, **kw):
        f.write('{"images": [')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", broken_dump)
    assert _predict(tiny_run, out, images / "sub" / "two.jpg") == 2
    assert (out / "results.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no temp file left


def test_user_errors_exit_2(tiny_run, images, tmp_path, capsys):
    assert _predict(tiny_run.parent / "nope", tmp_path / "o", images) == 2
    assert _predict(tiny_run, tmp_path / "o", tmp_path / "missing.png") == 2
    assert _predict(tiny_run, tmp_path / "o", images, extra=["--overlap", "0.3"]) == 2
    assert (
        _predict(tiny_run, tmp_path / "o", images, extra=["--slice", "512", "--overlap", "1"]) == 2
    )
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "missing.png" in err and "add --slice" in err
    assert "--overlap 1.0" in err
    assert not (tmp_path / "o").exists()
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model_final.pth").write_bytes((tiny_run / "model_final.pth").read_bytes())
    assert _predict(lone, tmp_path / "o", images) == 2
    assert "no config.yaml beside the checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------- evaluation


def _gt(tmp_path):
    gt = {
        "images": [
            {"id": 10, "file_name": "sub/one.png", "width": 80, "height": 64},
            {"id": 20, "file_name": "two.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400,
             "iscrowd": 0},
            {"id": 2, "image_id": 20, "category_id": 2, "bbox": [10, 8, 12, 12], "area": 144,
             "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
    }  # fmt: skip
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def test_evaluate_matches_predictions_by_file_name(tmp_path, capsys):
    gt = _gt(tmp_path)
    doc = {
        "images": [
            {"id": 1, "file_name": "two.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "one.png", "width": 80, "height": 64},  # GT: sub/one.png
            {"id": 3, "file_name": "extra.png", "width": 8, "height": 8},
        ],
        "annotations": [
            {"id": 1, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 8, 12, 12], "score": 0.8},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.7},
        ],
    }
    res = tmp_path / "results.json"
    res.write_text(json.dumps(doc))
    assert sorted((r["image_id"], r["category_id"]) for r in results_by_file_name(gt, res)) == [
        (10, 1),
        (20, 2),
    ]
    assert "1 predicted images are not in" in capsys.readouterr().err
    assert results_by_file_name(gt, gt) == gt  # a GT given as results: the evaluator says so
    report = tmp_path / "report.json"
    assert evaluate_main(["--gt", str(gt), "--results", str(res), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["AP"] == pytest.approx(1.0)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**doc, "images": [dict(doc["images"][2], id=1)]}))
    assert evaluate_main(["--gt", str(gt), "--results", str(other)]) == 2
    assert "none of its 1 images has a file_name" in capsys.readouterr().err


def test_evaluate_checkpoint_sliced(tiny_run, tmp_path, capsys):
    cfg = str(tiny_run / "config.yaml")
    ckpt = str(tiny_run / "model_final.pth")
    out = tmp_path / "eval.json"
    argv = ["--config", cfg, "--checkpoint", ckpt, "--json", str(out), "--no-errors"]
    assert evaluate_main([*argv, "--slice", "32", "--overlap", "0.2", "--full-image"]) == 0
    assert "AP" in json.loads(out.read_text())
    assert evaluate_main(["--gt", "g.json", "--results", "r.json", "--slice", "32"]) == 2
    assert "--slice runs a model" in capsys.readouterr().err
