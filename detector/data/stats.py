"""Dataset statistics: objects per size bin and per class, objects per image, a size histogram.

Size bins come from :mod:`detector.utils.bins` (one definition for evaluation and stats)
and objects are binned by their ``area`` field, exactly as the evaluation does; an ``area`` that
disagrees with the box is reported by validation (and can be recomputed with
``bad_area="recompute"``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from detector.utils.bins import assign_bin, get_bins

from .validation import ValidationReport, load_coco_json, resolve_image_path


def compute_stats(
    data: dict,
    *,
    bins: str | list = "coco",
    max_dets: int = 100,
    report: ValidationReport | None = None,
) -> dict:
    """Counts per size bin and class, objects per image percentiles, and warnings."""
    size_bins = get_bins(bins)
    names = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    crowd = len(data["annotations"]) - len(anns)
    bin_names = [b.name for b in size_bins[1:]]
    per_bin = dict.fromkeys(bin_names, 0)
    per_bin["(outside bins)"] = 0
    per_class = {names[c]: dict.fromkeys(["total", *bin_names], 0) for c in sorted(names)}
    for a in anns:
        b = assign_bin(float(a["area"]), size_bins) or "(outside bins)"
        per_bin[b] += 1
        row = per_class[names[a["category_id"]]]
        row["total"] += 1
        if b in row:
            row[b] += 1
    if not per_bin["(outside bins)"]:
        del per_bin["(outside bins)"]
    counts = {im["id"]: 0 for im in data["images"]}
    for a in anns:
        counts[a["image_id"]] += 1
    per_image = np.array(list(counts.values()) or [0], dtype=np.float64)
    densest = max(counts, key=counts.get) if counts else None
    file_of = {im["id"]: im["file_name"] for im in data["images"]}
    warnings = list(report.messages) if report else []
    if counts and counts[densest] > max_dets:
        warnings.append(
            f"image {densest} ({file_of[densest]!r}) has {counts[densest]} objects, more than the "
            f"evaluation's largest maxDets={max_dets}: even perfect detections cannot reach full "
            "recall there. Fix: raise eval.max_dets (e.g. [1, 10, 100, 1000]) and "
            "model.roi.detections_per_img."
        )
    sides = [math.sqrt(max(0.0, float(a["area"]))) for a in anns]
    return {
        "images": len(data["images"]),
        "annotations": len(anns),
        "crowd": crowd,
        "categories": len(names),
        "empty_images": int(sum(1 for v in counts.values() if v == 0)),
        "bins": [{"name": b.name, "lo": b.lo, "hi": b.hi} for b in size_bins[1:]],
        "per_bin": per_bin,
        "per_class": per_class,
        "objects_per_image": {
            "mean": float(per_image.mean()),
            "p50": float(np.percentile(per_image, 50)),
            "p90": float(np.percentile(per_image, 90)),
            "p99": float(np.percentile(per_image, 99)),
            "max": int(per_image.max()),
            "densest_image": densest,
        },
        "sqrt_area": {
            "min": float(min(sides)) if sides else 0.0,
            "p50": float(np.median(sides)) if sides else 0.0,
            "max": float(max(sides)) if sides else 0.0,
        },
        "max_dets": max_dets,
        "warnings": warnings,
        "_sides": sides,
    }


def check_image_files(
    data: dict, image_root: str | Path, ann_file: str | Path = "", *, open_all: bool = False
) -> list[str]:
    """Problems with the image files: missing ones, or (``open_all``) unreadable ones."""
    from .coco import open_image  # local: keeps stats importable without torch vision I/O
    from .validation import DatasetError

    problems = []
    for im in data["images"]:
        try:
            path = resolve_image_path(
                image_root, im["file_name"], ann_file=ann_file, image_id=im["id"]
            )
            if open_all:
                open_image(path, im["id"], (int(im["height"]), int(im["width"])), verify=True)
            elif not path.is_file():
                problems.append(f"image {im['id']} (file '{path}'): file not found")
        except DatasetError as err:
            problems.append(str(err))
    return problems


def format_stats(stats: dict, title: str = "") -> str:
    n = max(1, stats["annotations"])
    lines = []
    if title:
        lines.append(title)
    lines.append(
        f"images {stats['images']} (empty {stats['empty_images']}), objects {stats['annotations']}"
        f" (+{stats['crowd']} crowd), categories {stats['categories']}"
    )
    lines.append("")
    lines.append(f"{'size bin (sqrt area px)':<28}{'objects':>9}{'share':>8}")
    for b in stats["bins"]:
        hi = "inf" if math.isinf(b["hi"]) else f"{b['hi']:g}"
        label = f"{b['name']} [{b['lo']:g}, {hi}]"
        c = stats["per_bin"].get(b["name"], 0)
        lines.append(f"{label:<28}{c:>9}{c / n:>8.1%}")
    if "(outside bins)" in stats["per_bin"]:
        c = stats["per_bin"]["(outside bins)"]
        lines.append(f"{'(outside bins)':<28}{c:>9}{c / n:>8.1%}")
    lines.append("")
    names = [b["name"] for b in stats["bins"]]
    width = max([8, *(len(x) + 1 for x in names)])
    lines.append(f"{'class':<20}{'total':>8}" + "".join(f"{x:>{width}}" for x in names))
    unused = [cls for cls, row in stats["per_class"].items() if row["total"] == 0]
    hide_unused = len(stats["per_class"]) > 20
    for cls, row in stats["per_class"].items():
        if hide_unused and row["total"] == 0:
            continue
        lines.append(
            f"{cls[:19]:<20}{row['total']:>8}" + "".join(f"{row[x]:>{width}}" for x in names)
        )
    if unused:
        shown = ", ".join(unused[:10]) + (", ..." if len(unused) > 10 else "")
        lines.append(
            f"{len(unused)} of {len(stats['per_class'])} categories have no objects: {shown}"
        )
    o = stats["objects_per_image"]
    lines.append("")
    lines.append(
        f"objects per image: mean {o['mean']:.1f}, p50 {o['p50']:g}, p90 {o['p90']:g}, "
        f"p99 {o['p99']:g}, max {o['max']} (image {o['densest_image']})"
    )
    for w in stats["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)


def plot_size_histogram(stats: dict, out: str | Path, title: str = "") -> Path:
    """A log-x histogram of sqrt(area) with the size-bin edges drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in stats["_sides"] if s > 0]
    fig, ax = plt.subplots(figsize=(7, 4))
    if sides:
        lo, hi = max(1.0, min(sides) * 0.9), max(sides) * 1.1
        edges = np.geomspace(lo, max(hi, lo * 1.5), 40)
        ax.hist(sides, bins=edges, color="#4477aa")
    ax.set_xscale("log")
    for b in stats["bins"]:
        for e in (b["lo"], b["hi"]):
            if 0 < e < 1e5:
                ax.axvline(e, color="#cc3311", lw=0.8, ls="--")
    ax.set_xlabel("object size: sqrt(area) [px]")
    ax.set_ylabel("objects")
    ax.set_title(title or "object size histogram")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def dataset_stats(
    ann_file: str | Path,
    *,
    images: str | Path | None = None,
    bins: str | list = "coco",
    max_dets: int = 100,
    bad_area: str = "warn",
    check: bool = False,
) -> dict:
    """Validate ``ann_file`` and compute its statistics (image files checked if ``images``)."""
    data, report = load_coco_json(ann_file, image_root=images, bad_area=bad_area)
    stats = compute_stats(data, bins=bins, max_dets=max_dets, report=report)
    if images is not None:
        problems = check_image_files(data, images, ann_file, open_all=check)
        stats["image_problems"] = problems
        stats["warnings"].extend(problems[:20])
        if len(problems) > 20:
            stats["warnings"].append(f"... and {len(problems) - 20} more image problems")
    return stats
