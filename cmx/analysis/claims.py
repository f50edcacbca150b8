"""The conclusions of the paper's Appendix C as data: which rows each compares, in which direction.

`cmx table` compares numbers row by row; `cmx findings` (findings.py) asks whether the paper's
*conclusions* hold in our runs. Each Claim here is one conclusion, as the paper states it: one or more
comparisons between paper rows (a Comparison: row `a` against row `b`, effect = a − b; or an interaction,
(a − b) − (c − d)), a kind (what the sentence asserts), the sentence it comes from — or "rows only" where
the paper has table rows and no sentence — and what might change at the paper's full scale. The paper's
own effect is never typed in: it is computed from the rows in cmx.paper, so a claim cannot drift from
the numbers it cites (the text sometimes rounds: "an additional 1.50%" for rows that differ by 1.58; the
rows win and `note` says so).

Rows are named by their section and label or configuration (`Ref`) and resolved against cmx.paper.ROWS
when this module is imported: a reference that matches no row, or more than one, is an error here, not
a silently empty finding later.

Kinds (the numbers are percentage points of accuracy, or epochs for `metric="converge"`):
  greater    a > b by more than `by` (0 unless the paper states a size, e.g. "over 3%"): a gain or a loss
             the sentence asserts ("further to 7 an additional 0.61%")
  marginal   |a − b| < MARGIN: an equivalence ("relatively marginal", "was not important", "only a 0.31%
             decrease"), tested with two one-sided tests (stats.py)
  two_sided  rows only: no sentence says which way or how much, so the test is two-sided, and the verdict
             says whether our difference has the sign of the paper's rows
Metric: "acc" (final or best test accuracy, the table's) or "converge" (epochs to reach 90% of the run's
final accuracy, from epochs.csv; the paper gives no number for it, only the sentence).
A claim with several comparisons (a monotone chain p1 > p2 > p4 > p8, or "wider at d 4, 8 and 12") holds
only when every comparison holds; findings.py combines them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import paper

KINDS = ("greater", "marginal", "two_sided")
METRICS = ("acc", "converge")
# Half a point: what "marginal" and "not important" mean here. It lies above every difference the paper
# calls marginal or unimportant (k15 over k7: +0.28; at p = 2, k7/k9/k11 against k5: +0.14, −0.21, −0.07;
# GELU over ReLU +0.37; removing all residuals −0.31) and below the smallest kernel step it calls a gain
# (k7 over k5: +0.61), so the paper's own rows satisfy its claims.
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
    """Row `a` against row `b` (effect = a − b), or with `c` and `d` the interaction (a − b) − (c − d),
    claimed to be of `kind` (see the module doc), in `metric`."""

    name: str  # short text shown in tables: "k5 > k3"
    a: Ref
    b: Ref
    kind: str
    by: float = 0.0  # for greater: the size the effect must exceed
    c: Ref | None = None
    d: Ref | None = None
    metric: str = "acc"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.by and self.kind != "greater":
            raise ValueError("`by` is only for kind='greater'")
        if (self.c is None) != (self.d is None):
            raise ValueError("an interaction needs both c and d")
        for ref in self.refs:
            ref.resolve()  # fail at import, not at report time

    @property
    def refs(self) -> tuple[Ref, ...]:
        return (self.a, self.b) if self.c is None else (self.a, self.b, self.c, self.d)

    @property
    def weights(self) -> tuple[float, ...]:
        """The contrast: +a − b, or +a − b − c + d."""
        return (1.0, -1.0) if self.c is None else (1.0, -1.0, -1.0, 1.0)

    @property
    def paper_effect(self) -> float | None:
        """The paper's effect from its rows (rounded to their two decimals); None for convergence, for
        which the paper gives a sentence and no numbers."""
        if self.metric != "acc":
            return None
        return round(sum(w * r.resolve().acc for w, r in zip(self.weights, self.refs)), 2)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str  # the conclusion in one line
    parts: tuple[Comparison, ...]
    source: str  # where in the paper: the sentence quoted, or "rows only" with the rows
    full_scale: str  # whether the verdict is likely to change at the paper's scale, and why
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


def _chain(refs: list[tuple[str, Ref]], metric: str = "acc") -> tuple[Comparison, ...]:
    """a > b > c ... as the adjacent comparisons a > b, b > c, ..."""
    return tuple(Comparison(f"{na} > {nb}", ra, rb, "greater", metric=metric)
                 for (na, ra), (nb, rb) in zip(refs, refs[1:]))


def _rows_only(*labels: str) -> str:
    rows = "; ".join(f"{label}: {_t7(label).resolve().acc:.2f}" for label in ("Baseline", *labels))
    return f"rows only (Table 7, no sentence: {rows})"


# Why a verdict at the mini scale (64/4 p2, 4 epochs, 10,000 images) may not carry over to 200 epochs
# on 50,000 images at 256/8 p1: the reasons the claims below name.
UNDERFIT = "4 epochs underfit: regularisers that pay off over 200 epochs cost accuracy in short runs"
GRID = ("the receptive field relative to the token grid differs (our patches are twice the paper's: a 16×16 "
        "grid, 8×8 at p = 4, so a kernel spans 4× the share of the image)")
SPEED = "4 epochs measure early learning speed, which need not rank models as 200 epochs do"
_SCALING = ('Appendix C.1 "Scaling ConvMixer": "increasing the width or the depth is an effective way to '
            'increase accuracy"')
_CONVERGE = ('Appendix C.1 "Scaling ConvMixer": "finding that deeper networks take longer to converge while '
             'wider networks converge faster"')


CLAIMS: tuple[Claim, ...] = (
    Claim("kernel-5-3", "k = 5 beats k = 3 (256/8, p = 1)",
          (Comparison("k5 > k3", _kernel(5), _kernel(3), "greater"),),
          'Table 8, kernel adjustments; Appendix C.1 "Kernel size": "Simply increasing it to 5 gives an '
          'additional 1.50% accuracy"', f"the size may change: {GRID}",
          note="the text says 1.50; the rows (95.19 − 93.61) give 1.58"),
    Claim("kernel-7-5", "k = 7 beats k = 5 (256/8, p = 1)",
          (Comparison("k7 > k5", _kernel(7), _kernel(5), "greater"),),
          'Table 8, kernel adjustments; Appendix C.1: "and further to 7 an additional 0.61%"',
          f"may change: a 0.61-point gain is near the resolution of a short study, and {GRID}"),
    Claim("kernel-beyond-7", "beyond k = 7 the gains are marginal (256/8, p = 1)",
          (Comparison("k15 ≈ k7", _kernel(15), _kernel(7), "marginal"),
           Comparison("k15 ≈ k9", _kernel(15), _kernel(9), "marginal")),
          'Table 8, kernel adjustments; Appendix C.1: "The gains afterwards are relatively marginal, with '
          'kernel size 15 giving an additional 0.28% accuracy"',
          f"likely to change: {GRID}; the paper adds that 'with more "
          "training iterations or more regularization, the effect of larger kernels would be more pronounced'"),
    Claim("kernel-p2-5-3", "at p = 2, k = 5 beats k = 3 (256/8)",
          (Comparison("k5 > k3", _kernel_p2(5), _kernel_p2(3), "greater"),),
          'Table 8, kernel size adjustments when p = 2; Appendix C.1 "Patch size": "the improvement going '
          'from 3 to 5 is only 1.13%"', f"the size may change: {GRID}"),
    Claim("kernel-p2-beyond-5", "at p = 2, kernels larger than 5 are marginal (256/8)",
          tuple(Comparison(f"k{k} ≈ k5", _kernel_p2(k), _kernel_p2(5), "marginal") for k in (7, 9, 11)),
          'Table 8, kernel size adjustments when p = 2; Appendix C.1: "and larger kernels than 5 provide '
          'only marginal benefit"', f"may change: {GRID}"),
    Claim("kernel-patch", "the kernel gain (k5 − k3) is smaller at p = 2 than at p = 1 (256/8)",
          (Comparison("(k5 − k3 at p1) − (k5 − k3 at p2) > 0", _kernel(5), _kernel(3), "greater",
                      c=_kernel_p2(5), d=_kernel_p2(3)),),
          'Table 8; Appendix C.1 "Patch size": "Since the “internal resolution” is decreased by a factor of p '
          'when increasing the patch size, we assumed that larger kernels would be less important for larger '
          'p ... however, this time, the improvement going from 3 to 5 is only 1.13%"',
          f"likely to change: {GRID}; and an interaction of four rows needs more seeds than a difference of two"),
    Claim("kernel-vs-depth-10", "256/8 k9 beats the parameter-matched 256/10 k3",
          (Comparison("256/8 k9 > 256/10 k3", _kernel(9), Ref("kernel_vs_depth", d=10), "greater"),),
          'Appendix C.1 text: "The ConvMixer-256/10 achieved 94.29% accuracy (1.5% less), which provides '
          'more evidence for the importance of larger kernels"',
          f"may change: {GRID}; deeper models also converge more slowly, which 4 epochs exaggerate"),
    Claim("kernel-vs-depth-24", "256/8 k9 beats the 3× deeper 256/24 k3",
          (Comparison("256/8 k9 > 256/24 k3", _kernel(9), Ref("kernel_vs_depth", d=24), "greater"),),
          'Appendix C.1 text: "giving a ConvMixer-256/24 with 1670K parameters, and got 95.16% accuracy, '
          'i.e., still less"', "likely to shrink: a 3× deeper model converges more slowly, which 4 epochs "
          "exaggerate; the paper's gap is 0.72"),
    Claim("patch-monotone", "smaller patches are better: p = 1 > p = 2 > p = 4 > p = 8 (256/8 k9)",
          _chain([(f"p{p}", _patch(p)) for p in (1, 2, 4, 8)]),
          'Table 8, patch adjustments (p = 1 is the kernel block\'s k9 row); Appendix C.1 "Patch size": '
          '"Using p = 2, we see a reduction in accuracy of about 0.80% ... Further increasing the patch '
          'size leads to rapid decreases in accuracy"',
          "unlikely to change in direction (fewer tokens lose information at any budget); sizes differ "
          "because our patches are twice the paper's", note="the text says about 0.80; the rows give 0.88"),
    Claim("depth-128", "deeper is better at width 128: d 12 > 8 > 4 (p = 1, k = 8)",
          _chain([(f"d{d}", _wd(128, d)) for d in (12, 8, 4)]), "Table 8, width and depth; " + _SCALING,
          f"may change: deeper models converge more slowly and {SPEED}"),
    Claim("depth-256", "deeper is better at width 256 up to d = 16, and d = 20 is no better than d = 16 "
          "(p = 1, k = 8)",
          _chain([(f"d{d}", _wd(256, d)) for d in (16, 12, 8, 4)])
          + (Comparison("d20 ≈ d16", _wd(256, 20), _wd(256, 16), "marginal"),),
          "Table 8, width and depth (256/20: 96.67, below 256/16: 96.74, so the rows are not monotone at "
          "20); " + _SCALING, f"may change: deeper models converge more slowly and {SPEED}"),
    Claim("width", "wider is better at fixed depth: 256 > 128 at d = 4, 8 and 12 (p = 1, k = 8)",
          tuple(Comparison(f"256/{d} > 128/{d}", _wd(256, d), _wd(128, d), "greater") for d in (4, 8, 12)),
          "Table 8, width and depth; " + _SCALING,
          "unlikely to change in direction: wider models also converge faster, which favours them at 4 epochs"),
    Claim("converge-depth", "deeper networks take longer to converge (epochs to 90% of final accuracy)",
          (Comparison("256/16 slower than 256/4", _wd(256, 16), _wd(256, 4), "greater", metric="converge"),
           Comparison("128/12 slower than 128/4", _wd(128, 12), _wd(128, 4), "greater", metric="converge")),
          _CONVERGE, f"likely to change: {SPEED}; 90% of the final accuracy of an 8-epoch run is reached "
          "within a few epochs by every model"),
    Claim("converge-width", "wider networks converge faster (epochs to 90% of final accuracy)",
          (Comparison("128/4 slower than 256/4", _wd(128, 4), _wd(256, 4), "greater", metric="converge"),
           Comparison("128/8 slower than 256/8", _wd(128, 8), _wd(256, 8), "greater", metric="converge")),
          _CONVERGE, f"likely to change: {SPEED}"),
    Claim("batchnorm", "BatchNorm beats LayerNorm",
          (Comparison("BatchNorm > LayerNorm", BASELINE, _t7("BatchNorm → LayerNorm"), "greater"),),
          'Table 7; Appendix C "Normalization": "We attempted to use LayerNorm instead, and saw a decrease '
          'in performance of around 1%"', "unlikely to change in direction; the size may (the paper "
          "itself says it 'cannot guarantee' the effect at another scale)",
          note="the text says around 1%; the rows (95.88 − 94.44) give 1.44"),
    Claim("converge-layernorm", "LayerNorm converges more slowly than BatchNorm (epochs to 90% of final accuracy)",
          (Comparison("LayerNorm slower than BatchNorm", _t7("BatchNorm → LayerNorm"), BASELINE, "greater",
                      metric="converge"),),
          'Appendix C "Normalization": "saw a decrease in performance of around 1% as well as slower '
          'convergence"', f"may change: {SPEED}"),
    Claim("gelu", "GELU or ReLU does not matter (within ±0.5)",
          (Comparison("GELU ≈ ReLU", BASELINE, _t7("GELU → ReLU"), "marginal"),),
          'Table 7; Appendix A "ResNets": "We also note that the choice of ReLU vs. GELU was not important '
          'on CIFAR-10 experiments (see Table 7)"',
          "unlikely to change: neither activation depends on the budget; equivalence needs many seeds"),
    Claim("residual-eq3", "adding a residual around Eq. 3 costs accuracy",
          (Comparison("Baseline > + residual Eq. 3", BASELINE, _t7("+ Residual in Eq. 3"), "greater"),),
          'Table 7; Appendix C "Residual connections": "Our baseline model without the connection achieves '
          '95.88% accuracy, while including the connection reduces it to 94.78%"',
          "may change: the paper says 'these findings for residual connections may not generalize to deeper "
          "ConvMixers trained on larger data sets'; ours are shallower (d = 4)"),
    Claim("residual-none", "removing all residual connections costs little (within ±0.5)",
          (Comparison("Baseline ≈ − residual Eq. 2", BASELINE, _t7("- Residual in Eq. 2"), "marginal"),),
          'Table 7 ("- Residual in Eq. 2" leaves no residual at all); Appendix C "Residual connections": '
          '"Surprisingly, we see only a 0.31% decrease in accuracy for removing all residual connections"',
          "may change: residuals matter more in deeper models (ours have d = 4), as the paper cautions"),
    Claim("randaug", "removing RandAugment costs over 3 points",
          (Comparison("Baseline − RandAug > 3", BASELINE, _t7("- RandAug"), "greater", by=3.0),),
          _RANDAUG_SCALING, f"likely to change: {UNDERFIT}"),
    Claim("scaling", "removing random scaling costs over 3 points",
          (Comparison("Baseline − scaling > 3", BASELINE, _t7("- Random Scaling"), "greater", by=3.0),),
          _RANDAUG_SCALING, f"likely to change: {UNDERFIT}"),
    Claim("clipping", "removing gradient norm clipping changes accuracy, in the direction of the rows (a loss)",
          (Comparison("Baseline vs − clipping", BASELINE, _t7("- Gradient Norm Clipping"), "two_sided"),),
          _rows_only("- Gradient Norm Clipping"),
          "likely to change: clipping acts on rare large gradients, which short runs at a small width may never "
          "produce (then the runs are identical: not testable)"),
    Claim("erasing", "removing random erasing changes accuracy, in the direction of the rows (a loss)",
          (Comparison("Baseline vs − erasing", BASELINE, _t7("- Random Erasing"), "two_sided"),),
          _rows_only("- Random Erasing"), f"likely to change: {UNDERFIT}"),
    Claim("mixup", "removing mixup and cutmix changes accuracy, in the direction of the rows (+0.04, a gain)",
          (Comparison("− mixup/cutmix vs Baseline", _t7("- Mixup and CutMix"), BASELINE, "two_sided"),),
          _rows_only("- Mixup and CutMix"), f"likely to change: {UNDERFIT}",
          note="the rows differ by 0.04, within any seed noise: only the sign is tested, and a large "
               "difference either way is not what the rows show (see ours/paper)"),
    Claim("weight-decay", "tuned weight decay (1e-2) beats none (256/8 k9)",
          (Comparison("wd 1e-2 > wd 0", Ref("weight_decay", wd=1e-2), _kernel(9), "greater"),),
          'Table 8, weight decay adjustments (wd 0 is the kernel block\'s k9 row); Appendix C.1 "Weight '
          'decay": "by tuning weight decay, we can get an additional 0.15% of accuracy for no cost"',
          f"likely to change: a 0.15-point gain is below what a short study resolves, and {UNDERFIT}"),
)
