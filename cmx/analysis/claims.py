"""The conclusions of the paper's Appendix C as data: which rows each compares, in which direction.

`cmx table` compares numbers row by row; `cmx findings` (findings.py) asks whether the paper's
*conclusions* hold in our runs. Each Claim here is one conclusion: one or more comparisons between two
paper rows (a Comparison: row `a` against row `b`, effect = a − b), a direction (Kind), and the sentence
or table rows it comes from. The paper's own effect is never typed in: it is computed from the rows in
cmx.paper, so a claim cannot drift from the numbers it cites (the text sometimes rounds: "an additional
1.50%" for rows that differ by 1.58, "about 0.80%" for 0.88; the rows win and `note` says so).

Rows are named by their section and label or configuration (`Ref`) and resolved against cmx.paper.ROWS
when this module is imported: a reference that matches no row, or more than one, is an error here, not
a silently empty finding later.

Kinds (the numbers are percentage points of accuracy):
  greater   a > b by more than `by` (0 unless the paper states a size, e.g. "over 3%")
  at_least  a is not worse than b by more than MARGIN ("k7 ≥ k5", "GELU ≥ ReLU", "− mixup does not cost")
  marginal  |a − b| < MARGIN ("the gains afterwards are relatively marginal")
A claim with several comparisons (a monotone chain p1 > p2 > p4 > p8, or "wider at d 4, 8 and 12") holds
only when every comparison holds; findings.py combines them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import paper

KINDS = ("greater", "at_least", "marginal")
# Half a point: what "marginal" and "not worse" mean here. It lies above every difference the paper calls
# marginal (k15 over k7: +0.28; at p = 2, k7/k9/k11 against k5: +0.14, −0.21, −0.07) and below the
# smallest kernel step it calls a gain (k7 over k5: +0.61), so the paper's own rows satisfy its claims.
MARGIN = 0.5


@dataclass(frozen=True)
class Ref:
    """A paper row by section plus label (Table 7) or the configuration fields that pick it out."""

    section: str
    label: str | None = None  # None: any label (Table 8 rows have none; the text rows are named)
    h: int | None = None
    d: int | None = None
    p: int | None = None
    k: int | None = None
    wd: float | None = None

    def resolve(self) -> paper.PaperRow:
        hits = [r for r in paper.rows(section=self.section) if self.label in (None, r.label)
                and all(want is None or getattr(r, name) == want
                        for name, want in (("h", self.h), ("d", self.d), ("p", self.p), ("k", self.k), ("wd", self.wd)))]
        if len(hits) != 1:
            raise ValueError(f"{self} matches {len(hits)} paper rows, expected exactly one")
        return hits[0]


@dataclass(frozen=True)
class Comparison:
    """Row `a` against row `b`: effect = acc(a) − acc(b), claimed to be of `kind` (see the module doc)."""

    name: str  # short text shown in tables: "k5 > k3"
    a: Ref
    b: Ref
    kind: str
    by: float = 0.0  # for greater: the size the effect must exceed

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.by and self.kind != "greater":
            raise ValueError("`by` is only for kind='greater'")
        self.a.resolve(), self.b.resolve()  # fail at import, not at report time

    @property
    def paper_effect(self) -> float:
        """The paper's effect, a − b, from its rows (rounded to the rows' two decimals)."""
        return round(self.a.resolve().acc - self.b.resolve().acc, 2)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str  # the conclusion in one line
    parts: tuple[Comparison, ...]
    source: str  # where in the paper: table rows and, when there is one, the sentence quoted
    note: str = ""


# Shorthands for the rows the claims use (all ConvMixer-256/8 unless the name says otherwise).
def _kernel(k: int) -> Ref:
    return Ref("kernel", k=k)


def _kernel_p2(k: int) -> Ref:
    return Ref("kernel_p2", k=k)


def _patch(p: int) -> Ref:
    return _kernel(9) if p == 1 else Ref("patch", p=p)  # Table 8's patch block starts at p=2; p=1 is k9


def _wd(h: int, d: int) -> Ref:
    return Ref("width_depth", h=h, d=d)


def _t7(label: str) -> Ref:
    return Ref("ablation", label)


BASELINE = _t7("Baseline")
_RANDAUG_SCALING = ('Appendix C.1: "finding that RandAug and random scaling (“default” in timm) are very '
                    'important, each accounting for over 3% of the accuracy"; Table 7')


def _chain(refs: list[tuple[str, Ref]]) -> tuple[Comparison, ...]:
    """a > b > c ... as the adjacent comparisons a > b, b > c, ..."""
    return tuple(Comparison(f"{na} > {nb}", ra, rb, "greater") for (na, ra), (nb, rb) in zip(refs, refs[1:]))


CLAIMS: tuple[Claim, ...] = (
    Claim("kernel-5-3", "k = 5 beats k = 3 (256/8, p = 1)",
          (Comparison("k5 > k3", _kernel(5), _kernel(3), "greater"),),
          'Table 8, kernel adjustments; Appendix C.1 "Kernel size": "Simply increasing it to 5 gives an '
          'additional 1.50% accuracy"', note="the text says 1.50; the rows (95.19 − 93.61) give 1.58"),
    Claim("kernel-7-5", "k = 7 is at least as good as k = 5 (256/8, p = 1)",
          (Comparison("k7 ≥ k5", _kernel(7), _kernel(5), "at_least"),),
          'Table 8, kernel adjustments; Appendix C.1: "and further to 7 an additional 0.61%"'),
    Claim("kernel-beyond-7", "beyond k = 7 the gains are marginal (256/8, p = 1)",
          (Comparison("k15 ≈ k7", _kernel(15), _kernel(7), "marginal"),
           Comparison("k15 ≈ k9", _kernel(15), _kernel(9), "marginal")),
          'Table 8, kernel adjustments; Appendix C.1: "The gains afterwards are relatively marginal, with '
          'kernel size 15 giving an additional 0.28% accuracy"'),
    Claim("kernel-p2-5-3", "at p = 2, k = 5 beats k = 3 (256/8)",
          (Comparison("k5 > k3", _kernel_p2(5), _kernel_p2(3), "greater"),),
          'Table 8, kernel size adjustments when p = 2; Appendix C.1 "Patch size": "the improvement going '
          'from 3 to 5 is only 1.13%"'),
    Claim("kernel-p2-beyond-5", "at p = 2, kernels larger than 5 are marginal (256/8)",
          tuple(Comparison(f"k{k} ≈ k5", _kernel_p2(k), _kernel_p2(5), "marginal") for k in (7, 9, 11)),
          'Table 8, kernel size adjustments when p = 2; Appendix C.1: "and larger kernels than 5 provide '
          'only marginal benefit"'),
    Claim("kernel-vs-depth-10", "256/8 k9 beats the parameter-matched 256/10 k3",
          (Comparison("256/8 k9 > 256/10 k3", _kernel(9), Ref("kernel_vs_depth", d=10), "greater"),),
          'Appendix C.1 text: "The ConvMixer-256/10 achieved 94.29% accuracy (1.5% less), which provides '
          'more evidence for the importance of larger kernels"'),
    Claim("kernel-vs-depth-24", "256/8 k9 beats the 3× deeper 256/24 k3",
          (Comparison("256/8 k9 > 256/24 k3", _kernel(9), Ref("kernel_vs_depth", d=24), "greater"),),
          'Appendix C.1 text: "giving a ConvMixer-256/24 with 1670K parameters, and got 95.16% accuracy, '
          'i.e., still less"'),
    Claim("patch-monotone", "smaller patches are better: p = 1 > p = 2 > p = 4 > p = 8 (256/8 k9)",
          _chain([(f"p{p}", _patch(p)) for p in (1, 2, 4, 8)]),
          'Table 8, patch adjustments (p = 1 is the kernel block\'s k9 row); Appendix C.1 "Patch size": '
          '"Using p = 2, we see a reduction in accuracy of about 0.80% ... Further increasing the patch '
          'size leads to rapid decreases in accuracy"', note="the text says about 0.80; the rows give 0.88"),
    Claim("depth-128", "deeper is better at width 128: d 12 > 8 > 4 (p = 1, k = 8)",
          _chain([(f"d{d}", _wd(128, d)) for d in (12, 8, 4)]),
          'Table 8, width and depth; Appendix C.1 "Scaling ConvMixer": "increasing the width or the depth '
          'is an effective way to increase accuracy"'),
    Claim("depth-256", "deeper is better at width 256: d 16 > 12 > 8 > 4 (p = 1, k = 8)",
          _chain([(f"d{d}", _wd(256, d)) for d in (16, 12, 8, 4)]),
          'Table 8, width and depth (256/20 is left out: 96.67 < 96.74 for 256/16); Appendix C.1: '
          '"increasing the width or the depth is an effective way to increase accuracy"'),
    Claim("width", "wider is better at fixed depth: 256 > 128 at d = 4, 8 and 12 (p = 1, k = 8)",
          tuple(Comparison(f"256/{d} > 128/{d}", _wd(256, d), _wd(128, d), "greater") for d in (4, 8, 12)),
          'Table 8, width and depth; Appendix C.1: "increasing the width or the depth is an effective way '
          'to increase accuracy"'),
    Claim("batchnorm", "BatchNorm beats LayerNorm",
          (Comparison("BatchNorm > LayerNorm", BASELINE, _t7("BatchNorm → LayerNorm"), "greater"),),
          'Table 7; Appendix C "Normalization": "We attempted to use LayerNorm instead, and saw a decrease '
          'in performance of around 1%"'),
    Claim("gelu", "GELU is at least as good as ReLU",
          (Comparison("GELU ≥ ReLU", BASELINE, _t7("GELU → ReLU"), "at_least"),),
          "Table 7 (GELU → ReLU: 95.51 against the baseline's 95.88)"),
    Claim("randaug", "removing RandAugment costs over 3 points",
          (Comparison("Baseline − RandAug > 3", BASELINE, _t7("- RandAug"), "greater", by=3.0),),
          _RANDAUG_SCALING),
    Claim("scaling", "removing random scaling costs over 3 points",
          (Comparison("Baseline − scaling > 3", BASELINE, _t7("- Random Scaling"), "greater", by=3.0),),
          _RANDAUG_SCALING),
    Claim("clipping", "removing gradient norm clipping costs accuracy",
          (Comparison("Baseline > − clipping", BASELINE, _t7("- Gradient Norm Clipping"), "greater"),),
          "Table 7 (- Gradient Norm Clipping: 86.33)"),
    Claim("erasing", "removing random erasing costs accuracy",
          (Comparison("Baseline > − erasing", BASELINE, _t7("- Random Erasing"), "greater"),),
          "Table 7 (- Random Erasing: 95.24)"),
    Claim("mixup", "removing mixup and cutmix does not cost accuracy",
          (Comparison("− mixup/cutmix ≥ Baseline", _t7("- Mixup and CutMix"), BASELINE, "at_least"),),
          "Table 7 (- Mixup and CutMix: 95.92, against the baseline's 95.88)"),
    Claim("weight-decay", "tuned weight decay (1e-2) beats none (256/8 k9)",
          (Comparison("wd 1e-2 > wd 0", Ref("weight_decay", wd=1e-2), _kernel(9), "greater"),),
          'Table 8, weight decay adjustments (wd 0 is the kernel block\'s k9 row); Appendix C.1 "Weight '
          'decay": "by tuning weight decay, we can get an additional 0.15% of accuracy for no cost"'),
)
