"""The numbers HiCMAE's authors and later papers report, so that ``hicmae kfold`` can print them beside ours.

Only numbers written in REFERENCE.md section 15 are here; a metric not listed is "not reported", never
estimated or derived. Each number keeps its source, because the sources disagree by a few hundredths and one
of them (the paper itself) was read second-hand:

- ``readme``: the HiCMAE README, per-fold results of the released HiCMAE-B checkpoints (15.1).
- ``paper``: the paper's tables as read second-hand (15.2; verify in the PDF before quoting).
- ``reprint``: the comparison table of AVF-MAE++ (CVPR 2025), which reprints HiCMAE-B on all nine datasets (15.3).

Values are stored as printed (percent, also for CCC and PCC); :func:`in_units` converts one to the units of our
metric. Dataset names are those of ``configs/finetune/<name>.yaml``. No third-party import: ``hicmae kfold
--help`` lists the names without loading the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATASETS = ("crema_d", "ravdess", "mafw", "dfew", "msp_improv", "iemocap", "werewolf_xl", "avcaffe", "mer_multi")

# The original's ``--data_set`` name where it is not ours spelt differently (CREMA-D, MSP-IMPROV ... are).
_ALIASES = {"mer2023": "mer_multi"}

# Said in the output files, which travel without REFERENCE.md: each source by name and place.
SOURCES = {
    "readme": "HiCMAE README (github.com/sunlicai/HiCMAE): per-fold results of the released HiCMAE-B checkpoints",
    "paper": "Sun et al., HiCMAE, arXiv 2401.05698, read second-hand (verify in the PDF before quoting)",
    "reprint": "AVF-MAE++ (CVPR 2025, github.com/XuecWu/AVF-MAE): its comparison table reprinting HiCMAE",
}
SHORT = {"readme": "README", "paper": "paper", "reprint": "AVF-MAE++ reprint"}

AV = ("video", "audio")


@dataclass(frozen=True)
class Reported:
    """One reported result: a model on one dataset setting, as printed by one source.

    ``num_classes`` and ``modalities`` say which runs it compares with (a 4-class CREMA-D run is not the
    6-class benchmark; an audio-only run is not the audio-visual one). ``folds``: per-fold values, where
    the source prints them.
    """

    dataset: str
    source: str
    metrics: dict[str, float]
    model: str = "HiCMAE-B"
    setting: str = ""
    num_classes: int | None = None
    modalities: tuple[str, ...] = AV
    where: str = ""
    folds: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Row label for a table, e.g. ``HiCMAE-B, 6 classes: paper, Tab. 6``."""
        parts = [self.model]
        if self.setting:
            parts.append(self.setting)
        if self.modalities != AV:
            parts.append(" + ".join(self.modalities) + " only")
        return ", ".join(parts) + ": " + ", ".join(p for p in (SHORT[self.source], self.where) if p)


def _readme_folds(uar: list[float], war: list[float]) -> dict[int, dict[str, float]]:
    return {k: {"uar": u, "war": w} for k, (u, w) in enumerate(zip(uar, war), 1)}


_R = Reported
REPORTED: tuple[Reported, ...] = (
    # --- README, per fold (15.1): the means are the README's own, not recomputed.
    _R("crema_d", "readme", {"uar": 84.94, "war": 84.91}, setting="6 classes", num_classes=6, where="mean of 5 folds",
       folds=_readme_folds([86.66, 83.27, 87.23, 83.70, 83.88], [86.67, 83.20, 87.19, 83.79, 83.79])),
    _R("mafw", "readme", {"uar": 42.69, "war": 56.21}, setting="11 classes", num_classes=11, where="mean of 5 folds",
       folds=_readme_folds([36.02, 41.57, 46.46, 47.50, 41.88], [47.60, 55.10, 60.10, 63.09, 55.22])),
    # --- paper, second-hand (15.2)
    _R("mafw", "paper", {"uar": 42.65, "war": 56.17}, setting="11 classes", num_classes=11, where="Tab. 2"),
    _R("dfew", "paper", {"war": 75.01}, num_classes=7, where="Tab. 4"),
    _R("mer_multi", "paper", {"wf1": 55.33}, num_classes=6, modalities=("audio",), where="Tab. 3"),
    _R("crema_d", "paper", {"uar": 84.91, "war": 84.89}, setting="6 classes", num_classes=6, where="Tab. 6"),
    _R("crema_d", "paper", {"uar": 71.11, "war": 71.01}, setting="6 classes", num_classes=6, modalities=("audio",),
       where="Tab. 6"),
    _R("msp_improv", "paper", {"war": 74.95}, num_classes=4, where="Tab. 8"),
    _R("ravdess", "paper", {"war": 87.99}, num_classes=8, where="Tab. 9"),
    _R("ravdess", "paper", {"war": 72.29}, num_classes=8, modalities=("audio",), where="Tab. 9"),
    _R("iemocap", "paper", {"uar": 68.21, "war": 68.36}, num_classes=4, where="Tab. 10"),
    _R("iemocap", "paper", {"war": 65.23}, num_classes=4, modalities=("audio",), where="Tab. 10"),
    _R("iemocap", "paper", {"uar": 67.46}, model="HiCMAE-S", num_classes=4, where="Tab. 10"),
    _R("iemocap", "paper", {"war": 64.06}, model="HiCMAE-S", num_classes=4, modalities=("audio",), where="Tab. 10"),
    _R("iemocap", "paper", {"uar": 66.85}, model="HiCMAE-T", num_classes=4, where="Tab. 10"),
    _R("iemocap", "paper", {"war": 62.70}, model="HiCMAE-T", num_classes=4, modalities=("audio",), where="Tab. 10"),
    _R("werewolf_xl", "paper", {"pcc_arousal": 33.74, "ccc_arousal": 31.85, "pcc_valence": 69.23,
                                "ccc_valence": 64.81, "pcc_dominance": 40.66, "ccc_dominance": 37.54},
       num_classes=3, where="Tab. 11"),
    _R("avcaffe", "paper", {"wf1": 43.18}, setting="arousal", num_classes=5, where="Tab. 12"),
    _R("avcaffe", "paper", {"wf1": 44.20}, setting="valence", num_classes=5, where="Tab. 12"),
    # --- reprinted by AVF-MAE++ (15.3)
    _R("mafw", "reprint", {"uar": 42.65, "war": 56.17}, setting="11 classes", num_classes=11),
    _R("mafw", "reprint", {"uar": 13.29, "war": 37.36}, setting="43 compound classes", num_classes=43),
    _R("dfew", "reprint", {"uar": 63.76, "war": 75.01}, num_classes=7),
    _R("mer_multi", "reprint", {"uar": 64.15, "wf1": 71.33}, num_classes=6),
    _R("crema_d", "reprint", {"uar": 84.91, "war": 84.89}, setting="6 classes", num_classes=6),
    _R("crema_d", "reprint", {"uar": 94.00, "war": 94.13}, setting="4 classes", num_classes=4),
    _R("crema_d", "reprint", {"uar": 71.11, "war": 71.01}, setting="6 classes", num_classes=6, modalities=("audio",)),
    _R("crema_d", "reprint", {"uar": 77.25, "war": 77.21}, setting="6 classes", num_classes=6, modalities=("video",)),
    _R("msp_improv", "reprint", {"uar": 65.78, "war": 74.95}, num_classes=4),
    _R("ravdess", "reprint", {"uar": 87.96, "war": 87.99}, num_classes=8),
    _R("iemocap", "reprint", {"uar": 68.21, "war": 68.36}, num_classes=4),
    _R("iemocap", "reprint", {"uar": 67.46}, model="HiCMAE-S", num_classes=4),
    _R("iemocap", "reprint", {"uar": 66.85}, model="HiCMAE-T", num_classes=4),
    _R("werewolf_xl", "reprint", {"pcc_arousal": 33.74, "pcc_valence": 69.23, "pcc_dominance": 40.66,
                                  "ccc_arousal": 31.85, "ccc_valence": 64.81, "ccc_dominance": 37.54}, num_classes=3),
    _R("avcaffe", "reprint", {"wf1": 43.18}, setting="arousal", num_classes=5),
    _R("avcaffe", "reprint", {"wf1": 44.20}, setting="valence", num_classes=5),
)

# Metrics whose values we keep as fractions (the papers print them x 100).
FRACTION_METRICS = ("ccc", "pcc")


def dataset_name(name: str | None) -> str | None:
    """The canonical dataset name for ``name`` (``CREMA-D``, ``crema-d``, ``MER2023`` ...), or None if unknown."""
    if not name:
        return None
    key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    squeezed = {d.replace("_", ""): d for d in DATASETS}
    return squeezed.get(key) or _ALIASES.get(key)


def reported(dataset: str | None, *, num_classes: int | None = None,
             modalities: tuple[str, ...] | list[str] | None = None) -> list[Reported]:
    """Reported results for ``dataset`` that compare with a run of ``num_classes`` outputs on ``modalities``.

    A constraint left as None does not filter. The order is REFERENCE.md's: README, paper, reprint.
    """
    name = dataset_name(dataset)
    mods = tuple(sorted(modalities)) if modalities else None
    return [r for r in REPORTED if r.dataset == name
            and (num_classes is None or r.num_classes is None or r.num_classes == int(num_classes))
            and (mods is None or tuple(sorted(r.modalities)) == mods)]


def in_units(metric: str, value: float) -> float:
    """A printed value in the units of our metric ``metric``: CCC and PCC (also per dimension) are fractions."""
    return value / 100 if metric.split("_")[0] in FRACTION_METRICS else value
