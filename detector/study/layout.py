"""File names inside a study's run directory (one place, shared by runner, worker and report),
and the one reader of the trainer's ``config.yaml`` there."""

from __future__ import annotations

from pathlib import Path

import yaml

FINAL_MODEL = "model_final.pth"  # written by the trainer when training is complete
RESULTS_FILE = "results_val.json"  # COCO detections on the validation set
EVAL_FILE = "study_eval.json"  # evaluation + model facts + timings; written last (= evaluated)
STATUS_FILE = "study_status.json"  # ok / failed, message, attempts, log tail
SETTINGS_FILE = "study_run.json"  # config, overrides and resolved config the run was made with
LOG_FILE = "study.log"  # stdout+stderr of every phase of every attempt
LOCK_FILE = ".study.lock"  # pid@host of the study process working on the run
CONFIG_FILE = "config.yaml"  # the trainer's resolved config (rewritten on resume)
METRICS_FILE = "metrics.jsonl"  # the trainer's train / eval / final rows


def raw_config(run_dir: Path) -> dict | None:
    """``config.yaml`` as plain YAML (no validation: the report must not fail on a path that
    only resolves from the repository root); None when missing or unreadable."""
    try:
        data = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
