"""Studies: train and evaluate a set of configs over seeds and compare them in one report.

- :mod:`.spec` - the study file (YAML) and its checks,
- :mod:`.runner` - scheduling, skip-finished, resume-interrupted, failure isolation, one run per
  GPU,
- :mod:`.worker` - what each run executes in its own process (train, then eval),
- :mod:`.report` - ``report.md`` / ``report.json``, plots, TensorBoard HParams, composed from
  :mod:`.collect`, :mod:`.stats`, :mod:`.coverage`, :mod:`.markdown`, :mod:`.plots` and
  :mod:`.hparams`.
"""

from .report import write_report
from .runner import RunOutcome, StudyRunner, run_state, run_study
from .spec import Run, StudyError, StudySpec, Variant, load_study, parse_study

__all__ = [
    "Run",
    "RunOutcome",
    "StudyError",
    "StudyRunner",
    "StudySpec",
    "Variant",
    "load_study",
    "parse_study",
    "run_state",
    "run_study",
    "write_report",
]
