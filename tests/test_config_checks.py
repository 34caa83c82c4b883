"""Every config value is checked when the config is loaded, not when training reaches it.

Allowed words, numeric ranges and the rules tying keys together live in
``detector/config/defaults.py``; these tests hold the loader to them and to messages that name
the key, where the value came from, the value and what is allowed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from detector.config import ConfigError, load_config
from detector.config.defaults import (
    AT_MOST,
    CHOICES,
    DEFAULTS,
    ITEMS,
    NON_DECREASING,
    RANGES,
)
from detector.utils.bins import PRESETS
from detector.utils.dotted import flatten, get_dotted

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = "command-line override"


def _write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(None, list(overrides))
    return str(err.value)


# ------------------------------------------------------------------------------ the schema


def test_every_rule_names_a_key_of_the_schema():
    keys = set(flatten(DEFAULTS))
    rule_keys = {*CHOICES, *RANGES, *ITEMS, *NON_DECREASING, *AT_MOST, *AT_MOST.values()}
    assert rule_keys <= keys, sorted(rule_keys - keys)
    for key, choices in CHOICES.items():
        assert get_dotted(DEFAULTS, key) in choices, key
    # a bound on a list key holds per item, so the loader must know the items' type
    for key in RANGES:
        if isinstance(get_dotted(DEFAULTS, key), list):
            assert key in ITEMS, key


def test_defaults_pass_their_own_checks():
    cfg = load_config(None)
    assert cfg.model.variant == "dc5" and cfg.eval.bins == "coco"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_pass_the_value_checks(name):
    load_config(ROOT / "configs" / name)


# -------------------------------------------------------------------------- allowed values


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ("model.variant=dc6", "model.variant", "did you mean 'dc5'?"),
        ("model.backbone.norm=frozenbn", "model.backbone.norm", "did you mean 'frozen_bn'?"),
        ("solver.optimizer=adam", "solver.optimizer", "did you mean 'adamw'?"),
        ("solver.schedule=cosin", "solver.schedule", "did you mean 'cosine'?"),
        ("solver.amp=fp61", "solver.amp", "did you mean 'fp16'?"),
        ("eval.backend=pycocotool", "eval.backend", "did you mean 'pycocotools'?"),
        ("data.bad_area=recomput", "data.bad_area", "did you mean 'recompute'?"),
        ("model.rpn.matcher=rfl", "model.rpn.matcher", "did you mean 'rfla'?"),
        ("model.backbone.depth=51", "model.backbone.depth", "did you mean '50'?"),
    ],
)
def test_enumerated_value_names_key_choices_and_close_match(override, key, hint):
    msg = _refused(override)
    assert msg.startswith(f"{OVERRIDE}: unknown {key} ")
    assert "valid: " + ", ".join(map(str, CHOICES[key])) in msg
    assert hint in msg


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_enumerated_key_is_checked(key):
    bad = 19 if isinstance(get_dotted(DEFAULTS, key), int) else "zzzz"
    msg = _refused(f"{key}={bad}")
    assert key in msg and repr(bad) in msg
    assert all(str(c) in msg for c in CHOICES[key])


def test_roi_matcher_has_no_rfla():
    assert "valid: iou, nwd" in _refused("model.roi.matcher=rfla")


def test_yaml_on_is_the_word_and_checked(tmp_path):
    """``hdc_check: off`` is the word; ``on`` is a word too, but not one hdc_check takes."""
    assert load_config(_write(tmp_path / "a.yaml", "model:\n  backbone:\n    hdc_check: off\n"))
    bad = _write(tmp_path / "b.yaml", "model:\n  backbone:\n    hdc_check: on\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: unknown model.backbone.hdc_check 'on'"):
        load_config(bad)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted(device):
    assert load_config(None, [f"device={device}"]).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", "CPU", "cuda 1"])
def test_device_names_refused(device):
    msg = _refused(f"device={device}")
    assert f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N" in msg


def test_trailing_colon_read_as_mapping_says_to_quote():
    msg = _refused("device=cuda:")
    assert "key 'device' expects a string" in msg and "quote it" in msg


def test_misspelt_bin_preset_fails_in_load_config_at_once():
    start = time.perf_counter()
    msg = _refused("eval.bins=cocoo")
    assert time.perf_counter() - start < 5
    assert msg.startswith(f"{OVERRIDE}: eval.bins='cocoo'")
    assert all(name in msg for name in PRESETS)
    assert "did you mean 'coco'?" in msg


@pytest.mark.parametrize("spec", ["aitod", "TinyPerson", "0,8,16,32,96,inf", "0, 32, inf"])
def test_bin_presets_and_edges_accepted(spec):
    assert load_config(None, [f"eval.bins={spec}"]).eval.bins == spec


@pytest.mark.parametrize(
    ("spec", "why"), [("0,32,16", "strictly increasing"), ("0,8,x", "must be a number")]
)
def test_bad_bin_edges_refused(spec, why):
    msg = _refused(f"eval.bins={spec}")
    assert "eval.bins=" in msg and why in msg


def test_bad_value_in_a_base_names_the_base_file(tmp_path):
    _write(tmp_path / "base.yaml", {"solver": {"optimizer": "sgdd"}})
    child = _write(tmp_path / "child.yaml", {"_base_": "base.yaml", "seed": 1})
    with pytest.raises(ConfigError) as err:
        load_config(child)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "base.yaml")) and "solver.optimizer 'sgdd'" in msg
    # the child fixing it, or an override, is where the value comes from then
    fixed = _write(tmp_path / "fixed.yaml", {"_base_": "base.yaml", "solver": {"optimizer": "sgd"}})
    assert load_config(fixed).solver.optimizer == "sgd"
    msg = _refused_file(fixed, "solver.optimizer=adamx")
    assert msg.startswith(OVERRIDE)


def _refused_file(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, list(overrides))
    return str(err.value)


# ---------------------------------------------------------------------------- numeric ranges


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["solver.max_iter=0"], "solver.max_iter must be >= 1, got 0 (or train by epochs"),
        (["solver.max_iter=-5"], "solver.max_iter must be >= 1, got -5"),
        (["solver.lr=0"], "solver.lr must be > 0, got 0.0"),
        (["solver.lr=-1e-3"], "solver.lr must be > 0, got -0.001"),
        (["solver.ims_per_batch=0"], "solver.ims_per_batch must be >= 1, got 0"),
        (["solver.accumulate=0"], "solver.accumulate must be >= 1, got 0"),
        (["solver.warmup_factor=0"], "solver.warmup_factor must be in (0, 1], got 0.0"),
        (["solver.warmup_factor=2"], "solver.warmup_factor must be in (0, 1], got 2.0"),
        (["solver.betas=[0.9, 1.0]"], "solver.betas must be numbers each in [0, 1)"),
        (["solver.betas=[0.9]"], "solver.betas takes exactly 2 values, got 1"),
        (["solver.momentum=1.5"], "solver.momentum must be in [0, 1], got 1.5"),
        (["data.transforms.crop_size=-1"], "data.transforms.crop_size must be >= 0, got -1"),
        (["data.transforms.hflip=1.5"], "data.transforms.hflip must be in [0, 1], got 1.5"),
        (["data.transforms.min_box_visibility=-0.1"], "min_box_visibility must be in [0, 1]"),
        (["data.transforms.scale_jitter=[1.2, 0.8]"], "scale_jitter must not decrease"),
        (["data.transforms.scale_jitter=[0, 1]"], "scale_jitter must be positive numbers"),
        (["data.transforms.scale_jitter=[1.0]"], "scale_jitter takes exactly 2 values"),
        (["data.transforms.train_scales=[0, 600]"], "train_scales must be integers each >= 1"),
        (["data.num_workers=-1"], "data.num_workers must be >= 0, got -1"),
        (["eval.max_dets=[0]"], "eval.max_dets must be integers each >= 1, got [0]"),
        (["eval.max_dets=[1, -10]"], "eval.max_dets must be integers each >= 1, got [1, -10]"),
        (["eval.max_dets=[]"], "eval.max_dets takes at least 1 value, got 0"),
        (["eval.max_dets=[1, 10.5]"], "eval.max_dets must be a list of integers, got [1, 10.5]"),
        (["eval.max_dets=[a]"], "eval.max_dets must be a list of integers"),
        (["eval.period=-5"], "eval.period must be >= 0, got -5"),
        (["checkpoint.period=-1"], "checkpoint.period must be >= 0, got -1"),
        (["checkpoint.keep_last=-1"], "checkpoint.keep_last must be >= 0, got -1"),
        (["log.period=0"], "log.period must be >= 1, got 0"),
        (["model.backbone.trainable_layers=6"], "trainable_layers must be in [0, 5], got 6"),
        (["model.backbone.gn_groups=0"], "model.backbone.gn_groups must be >= 1, got 0"),
        (["model.anchors.sizes=[0, 16]"], "model.anchors.sizes must be positive numbers"),
        (["model.anchors.sizes=[]"], "model.anchors.sizes takes at least 1 value"),
        (["model.anchors.aspect_ratios=[-1]"], "aspect_ratios must be positive numbers"),
        (["model.transform.image_std=[0, 1, 1]"], "image_std must be positive numbers"),
        (["model.rpn.positive_fraction=2"], "model.rpn.positive_fraction must be in [0, 1]"),
        (["model.rpn.fg_iou_thresh=1.2"], "model.rpn.fg_iou_thresh must be in [0, 1], got 1.2"),
        (["model.roi.bg_iou_thresh=-0.1"], "model.roi.bg_iou_thresh must be in [0, 1]"),
        (["model.rpn.nwd.constant=0"], "model.rpn.nwd.constant must be > 0, got 0.0"),
        (["model.rpn.nwd.fg_thresh=1.5"], "model.rpn.nwd.fg_thresh must be in [0, 1], got 1.5"),
        (["model.roi.nwd.bg_thresh=-1"], "model.roi.nwd.bg_thresh must be in [0, 1], got -1.0"),
        (["model.rpn.rfla.topk=[]"], "model.rpn.rfla.topk takes at least 1 value, got 0"),
        (["model.rpn.rfla.topk=[3, 0]"], "model.rpn.rfla.topk must be integers each >= 1"),
        (["model.rpn.rfla.topk=[1.5]"], "model.rpn.rfla.topk must be a list of integers"),
        (["model.rpn.rfla.ratio=0"], "model.rpn.rfla.ratio must be in (0, 1], got 0.0"),
        (["model.rpn.rfla.ratio=1.1"], "model.rpn.rfla.ratio must be in (0, 1], got 1.1"),
        (["model.rpn.rfla.erf_fraction=0"], "model.rpn.rfla.erf_fraction must be in (0, 1]"),
        (["solver.steps=[0.5, 2000]"], "solver.steps: each milestone is a fraction"),
        (["solver.steps=[-0.5]"], "an iteration in [1, 1000] (solver.max_iter), got -0.5"),
        (["solver.steps=[1.5]"], "got 1.5 in [1.5]"),
    ],
)
def test_out_of_range_value_names_key_value_and_range(overrides, expected):
    msg = _refused(*overrides)
    assert msg.startswith(f"{OVERRIDE}: ")
    assert expected in msg


@pytest.mark.parametrize(
    ("thresholds", "low", "high"),
    [
        (["model.rpn.bg_iou_thresh=0.8"], "model.rpn.bg_iou_thresh=0.8", "fg_iou_thresh=0.7"),
        (["model.roi.fg_iou_thresh=0.4"], "model.roi.bg_iou_thresh=0.5", "fg_iou_thresh=0.4"),
        (["model.rpn.nwd.bg_thresh=0.9"], "model.rpn.nwd.bg_thresh=0.9", "fg_thresh=0.7"),
        (["model.roi.nwd.fg_thresh=0.2"], "model.roi.nwd.bg_thresh=0.5", "fg_thresh=0.2"),
    ],
)
def test_background_threshold_above_foreground_refused(thresholds, low, high):
    msg = _refused(*thresholds)
    assert f"{low} must be <= " in msg and high in msg


@pytest.mark.parametrize(
    "overrides",
    [
        ["solver.max_iter=0", "solver.max_epochs=2"],  # by epochs: max_iter is not used
        ["solver.steps=[0.5, 1000]", "solver.steps=[10, 0.9]"],
        ["solver.max_epochs=3", "solver.steps=[5000]"],  # iterations unknown until the data
        ["data.transforms.hflip=0", "data.transforms.hflip=1", "model.rpn.rfla.ratio=1"],
        ["model.rpn.bg_iou_thresh=0.7", "model.rpn.nwd.bg_thresh=0.7"],  # equal is allowed
        ["data.transforms.scale_jitter=[0.8, 1.25]", "eval.max_dets=[1, 100, 300]"],
        ["model.backbone.trainable_layers=0", "solver.betas=[0, 0.99]"],
    ],
)
def test_values_on_the_edges_are_accepted(overrides):
    load_config(None, overrides)


def test_out_of_range_value_in_a_file_names_the_file(tmp_path):
    bad = _write(tmp_path / "bad.yaml", {"eval": {"max_dets": [0]}})
    msg = _refused_file(bad)
    assert msg.startswith(f"{bad}: eval.max_dets must be integers each >= 1, got [0]")


# ---------------------------------------------------------------------- numbers as strings


def test_exponent_without_dot_in_yaml_is_the_number(tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string; a number key means the number."""
    path = _write(
        tmp_path / "c.yaml",
        "solver:\n  lr: 1e-3\n  max_iter: 1e4\n  weight_decay: 5E-4\n"
        "model:\n  anchors:\n    sizes: [1e1, 32]\neval:\n  max_dets: [1, 1e2]\n",
    )
    cfg = load_config(path)
    assert cfg.solver.lr == 0.001 and isinstance(cfg.solver.lr, float)
    assert cfg.solver.max_iter == 10000 and isinstance(cfg.solver.max_iter, int)
    assert cfg.solver.weight_decay == 0.0005
    assert cfg.model.anchors.sizes == [10.0, 32]
    assert cfg.eval.max_dets == [1, 100] and all(isinstance(v, int) for v in cfg.eval.max_dets)


def test_exponent_on_the_command_line_is_the_number():
    cfg = load_config(None, ["solver.max_iter=1e6", "solver.lr=1e-3", "solver.warmup_iters=1.5e2"])
    assert cfg.solver.max_iter == 1000000 and type(cfg.solver.max_iter) is int
    assert cfg.solver.lr == 0.001 and type(cfg.solver.lr) is float
    assert cfg.solver.warmup_iters == 150 and type(cfg.solver.warmup_iters) is int


def test_int_for_a_float_key_is_a_float(tmp_path):
    cfg = load_config(_write(tmp_path / "c.yaml", {"solver": {"lr": 1, "gamma": 1}}))
    assert type(cfg.solver.lr) is float and type(cfg.solver.gamma) is float


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("solver.max_iter=1.5e3x", "expects an integer"),
        ("solver.max_iter=1e-3", "expects an integer"),  # not integral
        ("solver.max_iter=2.5", "expects an integer"),
        ("solver.lr=fast", "expects a finite number"),
        ("solver.lr=.inf", "expects a finite number"),
        ("solver.lr=1e400", "expects a finite number"),
        ("solver.lr=1_e3", "expects a finite number"),
    ],
)
def test_non_numbers_for_number_keys_still_refused(override, expected):
    msg = _refused(override)
    assert override.split("=")[0] in msg and expected in msg


def test_saved_config_with_converted_numbers_reloads(tmp_path):
    from detector.config import save_config

    cfg = load_config(None, ["solver.lr=1e-3", "solver.max_iter=1e3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


# ------------------------------------------------------------------- malformed loader input


@pytest.mark.parametrize("base", [5, ["base.yaml", 3], None, [""], {"a": "base.yaml"}])
def test_base_must_be_a_path_or_list_of_paths(tmp_path, base):
    _write(tmp_path / "base.yaml", {"seed": 1})
    child = _write(tmp_path / "child.yaml", {"_base_": base})
    msg = _refused_file(child)
    assert msg.startswith(f"{child}: _base_ takes a path or a list of paths")
    assert repr(base) in msg


def test_missing_base_names_the_child(tmp_path):
    child = _write(tmp_path / "child.yaml", {"_base_": "nope.yaml"})
    msg = _refused_file(child)
    assert msg.startswith(f"{child}: _base_ 'nope.yaml' not found")


def test_base_chain_and_list_of_bases(tmp_path):
    _write(tmp_path / "a.yaml", {"seed": 1, "solver": {"lr": 0.1}})
    _write(tmp_path / "b.yaml", {"_base_": "a.yaml", "solver": {"lr": 0.2, "momentum": 0.5}})
    _write(tmp_path / "c.yaml", {"seed": 7})
    top = _write(tmp_path / "top.yaml", {"_base_": ["b.yaml", "c.yaml"], "eval": {"period": 3}})
    cfg = load_config(top)
    assert (cfg.seed, cfg.solver.lr, cfg.solver.momentum, cfg.eval.period) == (7, 0.2, 0.5, 3)


def test_key_written_twice_in_a_file_is_refused(tmp_path):
    """PyYAML would keep the second ``solver:`` block and drop the first without a word."""
    path = _write(tmp_path / "dup.yaml", "solver:\n  lr: 0.1\nseed: 1\nsolver:\n  max_iter: 5\n")
    msg = _refused_file(path)
    assert msg.startswith(f"{path}: not valid YAML: line 4, column 1: key 'solver' is written")
    assert "twice (first on line 1)" in msg and "\n" not in msg


def test_yaml_syntax_error_is_one_line_with_its_position(tmp_path):
    path = _write(tmp_path / "bad.yaml", "solver:\n  lr: [0.1\nseed: 1\n")
    msg = _refused_file(path)
    assert msg.startswith(f"{path}: not valid YAML: line ") and "\n" not in msg
    msg = _refused("solver.steps=[0.5")
    assert "value is not valid YAML: line 1, column" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["=5"], "has an empty key"),
        (["solver..lr=1"], "has an empty part between dots"),
        (["solver.lr."], "must look like KEY=VALUE"),
        (["solver.lr.=1"], "has an empty part between dots"),
        (["solver.lr.x=1"], "'solver.lr' is a single value (a finite number), not a section"),
        (
            ["model.backbone.dilations={layer4: [1, 2, 5]}", "model.backbone.dilations.layer4.x=1"],
            "'model.backbone.dilations.layer4' holds [1, 2, 5], not a mapping",
        ),
        ([5], "override 5 must be a KEY=VALUE string"),
        ("solver.lr=1", "overrides must be a list of KEY=VALUE strings, got str"),
        (["solver={lr: 1, lr: 2}"], "key 'lr' is written twice"),
    ],
)
def test_malformed_overrides_are_config_errors(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert expected in str(err.value)


def test_mapping_override_merges_into_its_section():
    cfg = load_config(None, ["model.rpn={matcher: nwd, nwd: {constant: 8}}"])
    assert cfg.model.rpn.matcher == "nwd" and cfg.model.rpn.nwd.constant == 8.0
    assert cfg.model.rpn.nwd.fg_thresh == 0.7 and cfg.model.rpn.fg_iou_thresh == 0.7
    with pytest.raises(ConfigError, match="unknown key 'model.rpn.matchr'"):
        load_config(None, ["model.rpn={matchr: nwd}"])


# ------------------------------------------------------------ what worked before still works


def test_free_form_dilations_replace_whole_and_are_checked(tmp_path):
    base = _write(tmp_path / "b.yaml", {"model": {"backbone": {"dilations": {"layer3": [2]}}}})
    cfg = load_config(base, ["model.backbone.dilations={layer4: [1, 2, 5, 9]}"])
    assert cfg.model.backbone.dilations == {"layer4": [1, 2, 5, 9]}
    cfg = load_config(base, ["model.backbone.dilations.layer4=[1, 2]"])
    assert cfg.model.backbone.dilations == {"layer3": [2], "layer4": [1, 2]}
    msg = _refused("model.backbone.dilations={layer5: [1, 2]}")
    assert "unknown stage 'layer5'" in msg and "did you mean 'layer4'?" in msg
    msg = _refused("model.backbone.dilations.layer4=[1, 0, 2]")
    assert "model.backbone.dilations.layer4 must be a non-empty list of positive integers" in msg
    assert "got [1, 0, 2]" in msg


def test_weights_stay_nullable():
    assert load_config(None).model.backbone.weights is None
    cfg = load_config(None, ["model.backbone.weights=ResNet18_Weights.IMAGENET1K_V1"])
    assert cfg.model.backbone.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert load_config(None, ["model.backbone.weights=null"]).model.backbone.weights is None
