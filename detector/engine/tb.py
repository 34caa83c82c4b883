"""Run logging: ``metrics.jsonl`` for scripts and TensorBoard event files for people.

Only rank 0 writes. Tags:

- ``train/loss/<component>``, ``train/loss/total``, ``train/lr``, ``train/img_per_s``,
  ``train/data_time``, ``train/compute_time``, ``train/memory_mb``
- ``eval/AP/<bin>``, ``eval/AR@100/<bin>`` ... (one tag family per metric), PR-curve figures
  per bin, ``val_images/<i>`` drawings
- Custom Scalars: one chart per metric holding all its size bins, one per bin for the error
  types, the losses together (:meth:`RunLogger.layout`)
- HParams: the main config values against the final metrics (``hparam/<metric>``).

The events go to ``<run>/tb/<run name>/`` (:func:`detector.engine.rundir.tb_events_dir`), so
that TensorBoard shows the run, and its HParams entry, under the run's name.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import torch

from detector.utils.files import atomic_write_bytes
from detector.utils.hparams import hparam_values

from .rundir import tb_events_dir


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def split_summary(summary: dict) -> dict[str, float]:
    """``{"AP_small": x, "AR@100": y}`` -> ``{"eval/AP/small": x, "eval/AR@100/all": y}``."""
    out = {}
    for key, value in summary.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        m = re.match(r"^(.*?)_(.+?)(@\d+)?$", key)
        if m and not key.startswith("AR@"):
            metric, bin_name, at = m.group(1), m.group(2), m.group(3) or ""
        elif key.startswith("AR") and "_" in key:
            metric_part, bin_part = key.split("_", 1)
            at_match = re.search(r"(@\d+)$", bin_part)
            at = at_match.group(1) if at_match else ""
            metric, bin_name = metric_part, bin_part.removesuffix(at)
        else:
            metric, bin_name, at = key, "all", ""
        out[f"eval/{metric}{at}/{bin_name}"] = float(value)
    return out


class RunLogger:
    """Writes ``metrics.jsonl`` and TensorBoard events (no-ops on ranks other than 0)."""

    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool, purge_step=None):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.writer = None
        self._jsonl = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if purge_step is not None:
            self._drop_rows_after(purge_step)
        self._jsonl = open(self.dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_dir = tb_events_dir(self.dir)
            self.writer = SummaryWriter(str(self.tb_dir), purge_step=purge_step)

    def _drop_rows_after(self, step: int) -> None:
        """On resume, forget rows a killed run wrote after its last checkpoint (like TB's purge)."""
        path = self.dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
        atomic_write_bytes(("\n".join(kept) + "\n" if kept else "").encode(), path)

    def record(self, kind: str, iteration: int, values: dict) -> None:
        if not self.enabled:
            return
        row = {"type": kind, "iteration": int(iteration), "time": round(time.time(), 3)}
        row.update({k: _jsonable(v) for k, v in values.items()})
        self._jsonl.write(json.dumps(row) + "\n")

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, v in values.items():
            self.writer.add_scalar(tag, float(v), step)

    def eval_report(self, report, step: int) -> None:
        """Scalars under ``eval/<metric>/<bin>`` plus the evaluator's PR figures."""
        if self.writer is None:
            return
        logged = False
        try:
            from detector.evaluation.tensorboard import log_report

            log_report(self.writer, report, step, prefix="eval")
            logged = True
        except ImportError:
            pass
        if not logged:
            self.scalars(split_summary(report.summary), step)

    def image(self, tag: str, img_chw_uint8: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, img_chw_uint8, step, dataformats="CHW")

    def layout(
        self,
        bins: list[str],
        max_dets: list[int],
        iou_thrs: list[float] | None = None,
        prefix: str = "eval",
    ) -> None:
        """The Custom Scalars tab: each metric's size bins in one chart (the Scalars tab gives
        every tag a chart of its own), each bin's error types in one, the losses in one.

        ``iou_thrs`` (default COCO's .50:.05:.95) decides which of AP25/AP50/AP75 exist.
        """
        if self.writer is None:
            return
        from detector.evaluation.summary import IOU_METRICS

        def chart(*regexes: str) -> list:
            return ["Multiline", list(regexes)]

        coco = [0.5 + 0.05 * i for i in range(10)]
        have = {round(float(t), 4) for t in (iou_thrs or coco)}
        at_iou = [
            m for m in IOU_METRICS if m == "AP" or m[2:].isdigit() and int(m[2:]) / 100 in have
        ]
        metrics = [*at_iou, *[f"AR@{m}" for m in max_dets]]
        self.writer.add_custom_scalars(
            {
                f"{prefix}: each metric by size bin": {
                    f"{m} by size bin": chart(f"^{prefix}/{re.escape(m)}/") for m in metrics
                },
                f"{prefix}: TIDE errors (dAP50) by type": {
                    f"{b}: dAP50 by error type": chart(f"^{prefix}/errors_dAP50/{re.escape(b)}/")
                    for b in bins
                },
                "train": {
                    "losses": chart("^train/loss/"),
                    "time per iteration: data vs compute": chart(
                        "^train/data_time$", "^train/compute_time$"
                    ),
                },
            }
        )

    def hparams(
        self, cfg: dict, metrics: dict[str, float], shown: dict[str, Any] | None = None
    ) -> None:
        """One HParams entry for the run, written into the run's own event file; ``shown``
        replaces config values by what the run really used (resolved dilation rates)."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        metric_dict = {
            f"hparam/{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if not metric_dict:
            return
        exp, ssi, sei = hparams({**hparam_values(cfg), **(shown or {})}, metric_dict)
        fw = self.writer._get_file_writer()
        fw.add_summary(exp)
        fw.add_summary(ssi)
        fw.add_summary(sei)
        for k, v in metric_dict.items():
            self.writer.add_scalar(k, v, 0)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
