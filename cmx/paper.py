"""The paper's CIFAR-10 numbers (Appendix C: Table 7, Table 8, and two rows from the text), in paper order.

Copied from ../shared/reference/paper_cifar10.csv so the package is self-contained: `cmx table` prints
these beside our runs and the model tests check Eq. 4 against the parameter column.

Also how a configuration is matched to a row (MATCH_FIELDS, `match_key`, `rows_matching`): `cmx table`
matches runs by it and `cmx sweep` resolves a sweep file's `paper:` stand-ins by it, so the two agree.
Torch-free on purpose (sweep planning and dry runs import it).
"""
from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from typing import Any, Mapping

from .config import RunConfig

# Section headings as the paper prints them (Table 8 uses "↓ ..." separators; Table 7 has one block).
SECTION_TITLES = {
    "ablation": "Ablation of ConvMixer-256/8",
    "width_depth": "Width and depth",
    "kernel": "Kernel adjustments",
    "patch": "Patch adjustments",
    "weight_decay": "Weight decay adjustments",
    "kernel_p2": "Kernel size adjustments when p = 2",
    "kernel_p2_wd": "Adding weight decay to the above",
    "kernel_vs_depth": "Kernel size vs. depth (from the text of Appendix C)",
}

# Table 7 label -> the config changes that make the ablation (everything else = ConvMixer-256/8 baseline).
ABLATIONS = {
    "Baseline": {},
    "- Residual in Eq. 2": {"residual": "none"},
    "+ Residual in Eq. 3": {"residual": "both"},
    "BatchNorm → LayerNorm": {"norm": "layer"},
    "GELU → ReLU": {"act": "relu"},
    "- Mixup and CutMix": {"mixup": False},
    "- Random Erasing": {"erasing": False},
    "- RandAug": {"randaug": False},
    "- Random Scaling": {"scaling": False},
    "- Gradient Norm Clipping": {"clip": False},
}

PAPER_EPOCHS = 200
PAPER_BATCH_SIZE = 64
PAPER_LR = 0.01

# What a run must share with a paper row to count for it: everything that changes the model or the
# recipe's regularisation. Not compared (shown instead): epochs, lr, batch size, seed, data.
MATCH_FIELDS = ("h", "d", "p", "k", "wd", "norm", "act", "residual",
                "scaling", "flip", "randaug", "mixup", "erasing", "clip")


@dataclass(frozen=True)
class PaperRow:
    table: str  # table7 | table8 | text
    section: str  # key of SECTION_TITLES
    label: str  # Table 7 ablation name or text row name; '' for Table 8
    h: int
    d: int
    p: int
    k: int
    wd: float
    params_k: int | None  # the paper's "# Params (x10^3)"; None for Table 7
    acc: float  # the paper's CIFAR-10 accuracy, percent

    def config_changes(self) -> dict:
        """The RunConfig fields (beyond the defaults) that reproduce this row."""
        changes = {"h": self.h, "d": self.d, "p": self.p, "k": self.k, "wd": self.wd}
        changes.update(ABLATIONS.get(self.label, {}))
        return changes

    @property
    def row_id(self) -> str:
        """Stable name of the row, e.g. 'table7:- RandAug' or 'table8:kernel:256/8 p1 k5 wd 0'."""
        if self.label:
            return f"{self.table}:{self.label}"
        return f"{self.table}:{self.section}:{self.h}/{self.d} p{self.p} k{self.k} wd {self.wd:g}"


_CSV = """\
table,section,label,h,d,p,k,weight_decay,params_k,cifar10_acc
table8,width_depth,,128,4,1,8,0,103,91.26
table8,width_depth,,128,8,1,8,0,205,93.83
table8,width_depth,,128,12,1,8,0,306,94.83
table8,width_depth,,256,4,1,8,0,338,93.37
table8,width_depth,,256,8,1,8,0,672,95.60
table8,width_depth,,256,12,1,8,0,1006,96.39
table8,width_depth,,256,16,1,8,0,1339,96.74
table8,width_depth,,256,20,1,8,0,1673,96.67
table8,kernel,,256,8,1,3,0,559,93.61
table8,kernel,,256,8,1,5,0,592,95.19
table8,kernel,,256,8,1,7,0,641,95.80
table8,kernel,,256,8,1,9,0,707,95.88
table8,kernel,,256,8,1,11,0,788,95.70
table8,kernel,,256,8,1,13,0,887,96.04
table8,kernel,,256,8,1,15,0,1001,96.08
table8,patch,,256,8,2,9,0,709,95.00
table8,patch,,256,8,4,9,0,718,92.61
table8,patch,,256,8,8,9,0,755,85.57
table8,weight_decay,,256,8,1,9,1e-1,707,95.88
table8,weight_decay,,256,8,1,9,1e-2,707,96.03
table8,weight_decay,,256,8,1,9,1e-3,707,95.76
table8,weight_decay,,256,8,1,9,1e-4,707,95.63
table8,weight_decay,,256,8,1,9,1e-5,707,95.88
table8,kernel_p2,,256,8,2,3,0,561,94.08
table8,kernel_p2,,256,8,2,5,0,594,95.21
table8,kernel_p2,,256,8,2,7,0,643,95.35
table8,kernel_p2,,256,8,2,9,0,709,95.00
table8,kernel_p2,,256,8,2,11,0,791,95.14
table8,kernel_p2_wd,,256,8,2,3,1e-2,561,94.69
table8,kernel_p2_wd,,256,8,2,5,1e-2,594,95.26
table8,kernel_p2_wd,,256,8,2,7,1e-2,643,95.25
table8,kernel_p2_wd,,256,8,2,9,1e-2,709,95.06
table8,kernel_p2_wd,,256,8,2,11,1e-2,791,95.17
table7,ablation,Baseline,256,8,1,9,0,,95.88
table7,ablation,- Residual in Eq. 2,256,8,1,9,0,,95.57
table7,ablation,+ Residual in Eq. 3,256,8,1,9,0,,94.78
table7,ablation,BatchNorm → LayerNorm,256,8,1,9,0,,94.44
table7,ablation,GELU → ReLU,256,8,1,9,0,,95.51
table7,ablation,- Mixup and CutMix,256,8,1,9,0,,95.92
table7,ablation,- Random Erasing,256,8,1,9,0,,95.24
table7,ablation,- RandAug,256,8,1,9,0,,92.86
table7,ablation,- Random Scaling,256,8,1,9,0,,86.24
table7,ablation,- Gradient Norm Clipping,256,8,1,9,0,,86.33
text,kernel_vs_depth,ConvMixer-256/10 k3 (params matched to k9),256,10,1,3,0,698,94.29
text,kernel_vs_depth,ConvMixer-256/24 k3 (3x depth of k9),256,24,1,3,0,1670,95.16
"""


def _load() -> tuple[PaperRow, ...]:
    rows = []
    for r in csv.DictReader(io.StringIO(_CSV)):
        rows.append(PaperRow(
            table=r["table"], section=r["section"], label=r["label"],
            h=int(r["h"]), d=int(r["d"]), p=int(r["p"]), k=int(r["k"]), wd=float(r["weight_decay"]),
            params_k=int(r["params_k"]) if r["params_k"] else None, acc=float(r["cifar10_acc"]),
        ))
    return tuple(rows)


ROWS: tuple[PaperRow, ...] = _load()


def rows(table: str | None = None, section: str | None = None) -> list[PaperRow]:
    return [r for r in ROWS if (table is None or r.table == table) and (section is None or r.section == section)]


# ---------------------------------------------------------------------- matching configurations to rows
def match_key(values: Mapping[str, Any]) -> str:
    """Canonical text of the MATCH_FIELDS of a run or config dict (wd to 6 significant digits)."""
    parts = []
    for name in MATCH_FIELDS:
        value = values[name]
        parts.append(f"{float(value):.6g}" if name == "wd" else str(value))
    return "|".join(parts)


def paper_config(row: PaperRow) -> RunConfig:
    """The RunConfig of a row: the defaults (= the paper's recipe) plus the row's changes."""
    return RunConfig(data="-").replace(**row.config_changes())


@functools.cache
def rows_by_key() -> dict[str, tuple[PaperRow, ...]]:
    """match_key → the rows with that configuration (paper order), built once: planning a sweep and
    tabulating runs look every run up here."""
    out: dict[str, tuple[PaperRow, ...]] = {}
    for row in ROWS:
        key = match_key(paper_config(row).to_dict())
        out[key] = out.get(key, ()) + (row,)
    return out


def rows_matching(config: RunConfig) -> list[PaperRow]:
    """Every paper row whose configuration equals `config` on MATCH_FIELDS (paper order; may be empty)."""
    return list(rows_by_key().get(match_key(config.to_dict()), ()))


BY_ID: dict[str, PaperRow] = {r.row_id: r for r in ROWS}
