"""The study file: which configs, which variations, which seeds; parsed and checked up front.

A study is a YAML mapping::

    name: builtin_r18                  # used in the report title (default: the file's stem)
    description: free text             # optional, shown under the report's title
    output: runs/study_builtin_r18     # study directory (relative: to the current directory)
    base: configs/faster_rcnn_r18_dc5.yaml   # optional: the config of variants that name none
    baseline: c5                       # the variant every other one is compared with
    seeds: [0, 1, 2]                   # each variant is trained once per seed
    common:                            # overrides applied to every run (before the variant's)
      - solver.max_iter=600
    variants:
      c5:  {config: configs/faster_rcnn_r18_c5.yaml}
      fpn: {config: configs/faster_rcnn_r18_fpn.yaml, overrides: [solver.lr=0.01]}
      big: {overrides: [model.backbone.depth=34], label: "R34 DC5"}  # = base + overrides
      r50: configs/faster_rcnn_r50_dc5.yaml   # short form: just the config
      extra: {overrides: [model.rpn.matcher=nwd], seeds: [0]}  # only some of the seeds
    parallel: 1                        # runs at once (with gpus: one run per listed GPU)
    gpus: []                           # e.g. [0, 1]: one run per GPU via CUDA_VISIBLE_DEVICES
    bootstrap: 1000                    # bootstrap resamples for the CIs, 0 = no CIs
    bootstrap_seed: 0
    hparams: [solver.lr, solver.max_iter]   # extra config keys shown in TensorBoard HParams
    timeout: 0                         # seconds per run phase, 0 = none
    command: null                      # advanced: replaces the training command (see below)
    eval_command: null                 # advanced: replaces the evaluation command

Paths: a relative ``config``/``base`` path is looked up first next to the study file, then in
the current directory. ``output`` is relative to the current directory (like
``tools/train.py --output``).

``command`` and ``eval_command`` are argument lists whose items may hold the placeholders
``{python}``, ``{config}``, ``{run_dir}``, ``{seed}``, ``{variant}``; the item ``{overrides}``
expands to the run's override list and ``{resume}`` to ``--resume`` (or nothing). They exist for
custom launchers and for tests; by default the runner calls :mod:`detector.study.worker`.

Checks made when the file is loaded (each error names the key and, for a typo, the closest
valid one): unknown keys, variant names that are not directory-safe, a baseline that is not a
variant, duplicate or non-integer seeds, missing config files, overrides that are not
``KEY=VALUE`` or that set ``seed``/``output_dir`` (the study owns those), unknown placeholders,
and - by loading every run's config with its overrides - unknown config keys and wrong types.

The run of variant ``v`` with seed ``s`` lives in ``<output>/runs/<v>/seed<s>``; its overrides
are ``common + variants.v.overrides + [seed=s, output_dir=<run dir>]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detector.utils.errors import SmalldetError
from detector.utils.suggest import suggest

STUDY_KEYS = {
    "name": "report title",
    "output": "study directory",
    "base": "default config for variants without one",
    "baseline": "reference variant",
    "seeds": "list of seeds",
    "common": "overrides for every run",
    "variants": "mapping name -> {config, overrides}",
    "parallel": "runs at once",
    "gpus": "GPU ids, one run per GPU",
    "bootstrap": "bootstrap resamples (0 = off)",
    "bootstrap_seed": "seed of the bootstrap",
    "hparams": "config keys shown in TensorBoard HParams",
    "timeout": "seconds per run phase (0 = none)",
    "command": "custom training command",
    "eval_command": "custom evaluation command",
    "description": "free text shown in the report",
}
VARIANT_KEYS = {
    "config": "config file",
    "overrides": "list of KEY=VALUE",
    "label": "display name",
    "seeds": "the study seeds this variant runs (default: all)",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PLACEHOLDERS = {"python", "config", "run_dir", "seed", "variant", "overrides", "resume"}


class StudyError(SmalldetError, ValueError):
    """A study file that cannot be run as written."""


@dataclass
class Variant:
    name: str
    config: Path
    overrides: list[str] = field(default_factory=list)
    label: str = ""
    seeds: list[int] | None = None  # None: every seed of the study


@dataclass
class Run:
    """One (variant, seed) training run."""

    variant: str
    seed: int
    config: Path
    overrides: list[str]
    run_dir: Path

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"


@dataclass
class StudySpec:
    name: str
    path: Path | None
    output: Path
    baseline: str
    seeds: list[int]
    variants: dict[str, Variant]
    common: list[str] = field(default_factory=list)
    parallel: int = 1
    gpus: list[str] = field(default_factory=list)
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    hparams: list[str] = field(default_factory=list)
    timeout: float = 0.0
    command: list[str] | None = None
    eval_command: list[str] | None = None
    description: str = ""

    def seeds_of(self, variant: str) -> list[int]:
        """The seeds ``variant`` runs, in the study's order (a variant may run only some)."""
        own = self.variants[variant].seeds
        return [s for s in self.seeds if own is None or s in own]

    def runs(self) -> list[Run]:
        """All runs, seed-major (every variant of seed 0 first) so early results compare."""
        out = []
        for seed in self.seeds:
            for v in self.variants.values():
                if seed not in self.seeds_of(v.name):
                    continue
                run_dir = self.output / "runs" / v.name / f"seed{seed}"
                overrides = [
                    *self.common,
                    *v.overrides,
                    f"seed={seed}",
                    f"output_dir={run_dir.as_posix()}",
                ]
                out.append(Run(v.name, seed, v.config, overrides, run_dir))
        return out


def _resolve_path(value: Any, where: str, study_dir: Path | None) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise StudyError(f"{where}: expects a path to a config file, got {value!r}")
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else []
    if not p.is_absolute():
        if study_dir is not None:
            candidates.append(study_dir / p)
        candidates.append(Path.cwd() / p)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise StudyError(f"{where}: config file {value!r} not found (tried {tried})")


def _override_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise StudyError(f"{where}: expects a list of KEY=VALUE strings, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, dict) and len(item) == 1:
            # YAML "- solver.lr: 0.01" reads as a one-key mapping; accept it
            ((k, v),) = item.items()
            item = f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        if not isinstance(item, str) or "=" not in item:
            raise StudyError(
                f"{where}: override {item!r} must look like KEY=VALUE, e.g. solver.max_iter=600"
            )
        key = item.split("=", 1)[0].strip()
        if key in ("seed", "output_dir"):
            raise StudyError(
                f"{where}: {item!r} - the study sets seed and output_dir of each run itself "
                "(use 'seeds:' and 'output:')"
            )
        out.append(item)
    return out


def _command(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{where}: expects a non-empty list of strings, got {value!r}")
    for item in value:
        for name in re.findall(r"{(\w+)}", item):
            if name not in PLACEHOLDERS:
                raise StudyError(
                    f"{where}: unknown placeholder {{{name}}}{suggest(name, PLACEHOLDERS)}"
                )
    return value


def _int(value: Any, where: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise StudyError(f"{where}: expects an integer >= {lo}, got {value!r}")
    return value


def parse_study(data: Any, path: Path | None = None, check_configs: bool = True) -> StudySpec:
    """Check a study mapping and turn it into a :class:`StudySpec`."""
    src = str(path) if path else "study"
    if not isinstance(data, dict):
        raise StudyError(f"{src}: a study must be a mapping of keys, got {type(data).__name__}")
    for key in data:
        if key not in STUDY_KEYS:
            raise StudyError(f"{src}: unknown key {key!r}{suggest(key, STUDY_KEYS)}")
    study_dir = path.parent.resolve() if path else None

    name = data.get("name") or (path.stem if path else "study")
    if not isinstance(name, str):
        raise StudyError(f"{src}: 'name' expects a string, got {name!r}")
    output = data.get("output") or f"runs/study_{name}"
    if not isinstance(output, str):
        raise StudyError(f"{src}: 'output' expects a path string, got {output!r}")

    base = data.get("base")
    base_path = _resolve_path(base, f"{src}: 'base'", study_dir) if base is not None else None

    raw_variants = data.get("variants")
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise StudyError(
            f"{src}: 'variants' must be a non-empty mapping, e.g. "
            "{c5: {config: configs/faster_rcnn_r18_c5.yaml}}"
        )
    variants: dict[str, Variant] = {}
    for vname, vdata in raw_variants.items():
        where = f"{src}: variant {vname!r}"
        if not isinstance(vname, str) or not NAME_RE.match(vname):
            raise StudyError(
                f"{where}: a variant name must be letters, digits, '_', '-', '.' or '+' "
                "(it becomes a directory name)"
            )
        if vdata is None:
            vdata = {}
        if isinstance(vdata, str):  # short form  c5: configs/x.yaml
            vdata = {"config": vdata}
        if not isinstance(vdata, dict):
            raise StudyError(f"{where}: expects a mapping with 'config' and/or 'overrides'")
        for key in vdata:
            if key not in VARIANT_KEYS:
                raise StudyError(f"{where}: unknown key {key!r}{suggest(key, VARIANT_KEYS)}")
        if "config" in vdata:
            cfg_path = _resolve_path(vdata["config"], f"{where}: 'config'", study_dir)
        elif base_path is not None:
            cfg_path = base_path
        else:
            raise StudyError(f"{where}: has no 'config' and the study has no 'base' config")
        label = vdata.get("label", vname)
        if not isinstance(label, str):
            raise StudyError(f"{where}: 'label' expects a string, got {label!r}")
        variants[vname] = Variant(
            vname,
            cfg_path,
            _override_list(vdata.get("overrides"), f"{where}: 'overrides'"),
            label,
            None if vdata.get("seeds") is None else _seed_list(vdata["seeds"], where),
        )

    baseline = data.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise StudyError(
            f"{src}: baseline {baseline!r} is not a variant{suggest(baseline, variants)}"
        )

    seeds = _seed_list(data.get("seeds", [0]), src)
    for v in variants.values():
        extra = sorted(set(v.seeds or []) - set(seeds))
        if extra:
            raise StudyError(
                f"{src}: variant {v.name!r}: seeds {extra} are not among the study's seeds "
                f"{seeds}; add them to 'seeds:' or drop them from the variant"
            )

    gpus = data.get("gpus", []) or []
    if isinstance(gpus, (int, str)) and not isinstance(gpus, bool):
        gpus = [g.strip() for g in str(gpus).split(",") if g.strip()]
    if not isinstance(gpus, list):
        raise StudyError(f"{src}: 'gpus' expects a list of GPU ids such as [0, 1], got {gpus!r}")
    gpus = [str(g) for g in gpus]
    parallel = _int(data.get("parallel", len(gpus) or 1), f"{src}: 'parallel'", lo=1)

    hparams = data.get("hparams", []) or []
    if not isinstance(hparams, list) or not all(isinstance(h, str) for h in hparams):
        raise StudyError(f"{src}: 'hparams' expects a list of dotted config keys, got {hparams!r}")

    timeout = data.get("timeout", 0) or 0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise StudyError(f"{src}: 'timeout' expects seconds >= 0, got {timeout!r}")
    if isinstance(timeout, float) and math.isnan(timeout):
        raise StudyError(f"{src}: 'timeout' is NaN")

    description = data.get("description", "") or ""
    if not isinstance(description, str):
        raise StudyError(f"{src}: 'description' expects a string")

    spec = StudySpec(
        name=name,
        path=path,
        output=Path(output),
        baseline=baseline,
        seeds=list(seeds),
        variants=variants,
        common=_override_list(data.get("common"), f"{src}: 'common'"),
        parallel=parallel,
        gpus=gpus,
        bootstrap=_int(data.get("bootstrap", 1000), f"{src}: 'bootstrap'"),
        bootstrap_seed=_int(data.get("bootstrap_seed", 0), f"{src}: 'bootstrap_seed'"),
        hparams=list(hparams),
        timeout=float(timeout),
        command=_command(data.get("command"), f"{src}: 'command'"),
        eval_command=_command(data.get("eval_command"), f"{src}: 'eval_command'"),
        description=description,
    )
    if check_configs:
        check_run_configs(spec)
    return spec


def _seed_list(raw: Any, where: str) -> list[int]:
    """A ``seeds:`` value (the study's or a variant's): one integer or a list without repeats."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise StudyError(f"{where}: 'seeds' expects a non-empty list of integers, got {raw!r}")
    for s in raw:
        _int(s, f"{where}: seed {s!r}")
    if len(set(raw)) != len(raw):
        raise StudyError(f"{where}: 'seeds' has duplicates: {raw}")
    return list(raw)


def check_run_configs(spec: StudySpec) -> None:
    """Load every run's config now, so a typo fails before hours of training, not after."""
    from detector.config import ConfigError, load_config

    checked: set[str] = set()
    for run in spec.runs():
        if run.variant in checked:
            continue  # the seed cannot make a config invalid
        checked.add(run.variant)
        try:
            load_config(run.config, run.overrides)
        except ConfigError as err:
            raise StudyError(f"variant {run.variant!r}: {err}") from None


def load_study(path: str | Path, check_configs: bool = True) -> StudySpec:
    """Read, check and return the study in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    return parse_study(data, path, check_configs=check_configs)
