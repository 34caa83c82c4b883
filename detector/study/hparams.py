"""TensorBoard HParams of a study: one sub-run per finished run, its config keys against its
final metrics, so runs can be sorted and filtered in TensorBoard's HParams tab."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from detector.utils.files import read_json_or
from detector.utils.hparams import HPARAM_KEYS, hparam_values

from .collect import is_num
from .layout import SETTINGS_FILE
from .spec import StudySpec


def write_hparams(spec: StudySpec, recs: list[dict], tb_dir: Path) -> int:
    """Rebuild ``tb_dir`` with one sub-run per finished run; returns how many were written."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    if tb_dir.exists():
        shutil.rmtree(tb_dir)  # rebuilt from scratch, so re-running adds no duplicates
    keys = [*HPARAM_KEYS, *spec.hparams]
    n = 0
    for r in recs:
        if not r["eval"]:
            continue
        resolved = read_json_or(Path(r["run_dir"]) / SETTINGS_FILE, {}).get("resolved", {})
        hp: dict[str, Any] = {"variant": r["variant"], "seed": r["seed"]}
        hp.update(hparam_values(resolved, keys))
        metrics = {f"study/{k}": float(v) for k, v in r["eval"]["summary"].items() if is_num(v)}
        facts = {
            "study/train_img_per_s": r["train"]["img_per_s"],
            "study/inference_s_per_img": r["eval"].get("inference_s_per_img"),
        }
        metrics.update({k: float(v) for k, v in facts.items() if v is not None})
        exp, ssi, sei = hparams(hp, metrics)
        with SummaryWriter(log_dir=str(tb_dir / f"{r['variant']}_seed{r['seed']}")) as w:
            w.file_writer.add_summary(exp)
            w.file_writer.add_summary(ssi)
            w.file_writer.add_summary(sei)
            for k, v in metrics.items():
                w.add_scalar(k, v, 0)
        n += 1
    return n
