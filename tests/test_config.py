"""Config files: _base_ inheritance merged in depth, dotted overrides, refusals with suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detector.config import ConfigError, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_inheritance_merges_in_depth(tmp_path):
    _write(tmp_path / "base.yaml", {"model": {"backbone": {"depth": 50, "norm": "gn"}}, "seed": 3})
    child = _write(
        tmp_path / "child.yaml",
        {"_base_": "base.yaml", "model": {"backbone": {"depth": 18}}, "solver": {"lr": 0.5}},
    )
    cfg = load_config(child)
    assert cfg.model.backbone.depth == 18  # child wins
    assert cfg.model.backbone.norm == "gn"  # sibling key from the base survives
    assert cfg.seed == 3
    assert cfg.solver.lr == 0.5
    assert cfg.solver.momentum == 0.9  # schema default


def test_overrides_are_dotted_and_typed(tmp_path):
    child = _write(tmp_path / "c.yaml", {"solver": {"lr": 0.5}})
    cfg = load_config(child, ["model.backbone.depth=50", "solver.lr=1", "eval.period=10"])
    assert cfg.model.backbone.depth == 50
    assert cfg.solver.lr == 1.0 and isinstance(cfg.solver.lr, float)
    assert cfg.eval.period == 10


def test_required_keys_exist_with_their_meaning():
    cfg = load_config(None)
    for key in ("max_iter", "lr", "ims_per_batch"):
        assert key in cfg.solver
    assert "period" in cfg.eval and "seed" in cfg


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [("solver.lrr=0.1", "'lr'"), ("solver.max_iters=5", "'max_iter'"), ("evl.period=1", "'eval'")],
)
def test_unknown_override_suggests_closest_key(override, suggestion):
    with pytest.raises(ConfigError, match="unknown key") as err:
        load_config(None, [override])
    assert suggestion in str(err.value)


def test_unknown_key_in_file_suggests(tmp_path):
    bad = _write(tmp_path / "bad.yaml", {"solver": {"ims_per_batc": 2}})
    with pytest.raises(ConfigError, match="did you mean 'ims_per_batch'"):
        load_config(bad)


def test_type_mismatch_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="solver.max_iter"):
        load_config(None, ["solver.max_iter=abc"])
    bad = _write(tmp_path / "bad.yaml", {"eval": {"period": "often"}})
    with pytest.raises(ConfigError, match="eval.period"):
        load_config(bad)


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["solver.lr=0.003"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads(name):
    load_config(ROOT / "configs" / name)
