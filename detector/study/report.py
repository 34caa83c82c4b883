"""The comparison report of a study: ``report.md``, ``report.json``, plots and TensorBoard HParams.

Everything is read back from the run directories (``study_eval.json``, ``results_val.json``,
``metrics.jsonl``, ``study_status.json``, ``curve/``), so the report can be rebuilt at any time
(``tools/study.py STUDY --report-only``), also while some runs are missing or failed.

One module per job, composed here:

- :mod:`.collect` - one record per run, read from its directory,
- :mod:`.stats` - the numbers: means, paired deltas, bootstrap CIs, errors, curves, facts (the
  statistics are explained there),
- :mod:`.coverage` - anchor coverage of the training boxes per variant,
- :mod:`.markdown` - ``report.md``,
- :mod:`.plots` - the PNG figures,
- :mod:`.curves` - learning curves: the points already in the run directories (the report never
  scores a checkpoint; ``smalldet curve`` does),
- :mod:`.hparams` - the TensorBoard HParams runs.
"""

from __future__ import annotations

from pathlib import Path

from detector.utils.files import atomic_write_json, atomic_write_text

from .collect import collect
from .coverage import anchor_facts
from .hparams import write_hparams
from .markdown import markdown
from .plots import plot, plot_learning_curves
from .spec import StudySpec
from .stats import aggregate


def write_report(spec: StudySpec, tensorboard: bool = True, plots: bool = True) -> dict:
    """Write ``report.md``, ``report.json``, the plots and ``tb/`` into the study directory.

    The numbers never fail the report: plots, anchor coverage and TensorBoard are best-effort
    extras whose errors are recorded in it (``plot_error``, the variant's coverage ``error``,
    ``tb_error``). Both files are written atomically, so a reader never sees half a report.
    """
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    recs = collect(spec)
    agg = aggregate(spec, recs)
    agg["plots"] = []
    if plots and any(r["eval"] for r in recs):
        try:
            agg["plots"] = plot(agg, out)
        except Exception as err:  # noqa: BLE001
            agg["plot_error"] = f"{type(err).__name__}: {err}"
    if plots and agg["learning_curves"]:  # also while no run has finished
        try:
            agg["plots"].append(plot_learning_curves(agg, out))
        except Exception as err:  # noqa: BLE001
            agg["plot_error"] = "; ".join(
                filter(None, [agg.get("plot_error"), f"{type(err).__name__}: {err}"])
            )
    agg["anchor_coverage"] = anchor_facts(spec, recs)  # guarded per variant
    agg["tb_dir"] = str(out / "tb")
    if tensorboard:
        try:
            agg["tb_runs"] = write_hparams(spec, recs, out / "tb")
        except Exception as err:  # noqa: BLE001
            agg["tb_error"] = f"{type(err).__name__}: {err}"
    atomic_write_text(markdown(agg), out / "report.md")
    atomic_write_json(agg, out / "report.json", indent=1)
    return agg
