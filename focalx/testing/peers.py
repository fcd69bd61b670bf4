"""Ready-made mappings for the focal losses the project documents, and the migration table
generated from them (``python -m focalx.testing.peers --markdown``).

Each :class:`Peer` names the library's function (imported only when used), the
:class:`~focalx.testing.Signature` that maps focalx's arguments to it, the focalx call that
reproduces its numbers, and the kinds of disagreement its report shows: the test suite runs
``compare`` on every peer that installs here and asserts exactly those kinds, so the table
below is the reports' (tests/test_testing.py). fvcore, mmdet and smp do not install beside
torch 2.13 (smp and torchvision pull torch 2.14): their entries are their documented
formulas written out below, marked ``written=True``, and run as such.

    focalx compare focalx.testing.peers:kornia_focal_loss --loss softmax --peer kornia
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field

from ._signature import NOT_EXPRESSIBLE, Signature

# ---- wrappers: the library's call, its hyperparameters as keyword arguments -----------


def _reduce(ops_sum, ops_mean, loss, reduction):
    if reduction == "sum":
        return ops_sum(loss)
    if reduction == "mean":
        return ops_mean(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def keras_binary_focal_crossentropy(logits, targets, *, gamma=2.0, alpha=0.25,
                                    apply_class_balancing=False, label_smoothing=0.0,
                                    reduction="none"):
    """``keras.losses.binary_focal_crossentropy(targets, logits, from_logits=True, ...)`` per
    element (a trailing axis of 1, so its mean over the last axis keeps every element);
    "mean" is its ``sum_over_batch_size``."""
    import keras
    loss = keras.losses.binary_focal_crossentropy(
        targets[..., None], logits[..., None], apply_class_balancing=apply_class_balancing,
        alpha=alpha, gamma=gamma, from_logits=True, label_smoothing=label_smoothing)
    return _reduce(keras.ops.sum, keras.ops.mean, loss, reduction)


def keras_categorical_focal_crossentropy(logits, targets, *, gamma=2.0, alpha=0.25,
                                         label_smoothing=0.0, reduction="none"):
    """``keras.losses.categorical_focal_crossentropy(targets, logits, from_logits=True)``
    (one-hot or probability targets, classes last), per sample."""
    import keras
    loss = keras.losses.categorical_focal_crossentropy(
        targets, logits, alpha=alpha, gamma=gamma, from_logits=True,
        label_smoothing=label_smoothing)
    return _reduce(keras.ops.sum, keras.ops.mean, loss, reduction)


def monai_focal_loss(logits, targets, *, gamma=2.0, alpha=None, reduction="mean",
                     use_softmax=False):
    """``monai.losses.FocalLoss(gamma=, alpha=, reduction=, use_softmax=)(logits, targets)``."""
    from monai.losses import FocalLoss
    return FocalLoss(gamma=gamma, alpha=alpha, reduction=reduction,
                     use_softmax=use_softmax)(logits, targets)


def paddle_sigmoid_focal_loss(logit, label, *, normalizer=None, alpha=0.25, gamma=2.0,
                              reduction="sum"):
    """``paddle.nn.functional.sigmoid_focal_loss`` with a number `normalizer` passed as the
    shape-[1] tensor Paddle requires."""
    import paddle
    if normalizer is not None and not isinstance(normalizer, paddle.Tensor):
        normalizer = paddle.full([1], float(normalizer), dtype=logit.dtype)
    return paddle.nn.functional.sigmoid_focal_loss(logit, label, normalizer=normalizer,
                                                   alpha=alpha, gamma=gamma,
                                                   reduction=reduction)


def fvcore_sigmoid_focal_loss(inputs, targets, alpha=-1, gamma=2, reduction="none"):
    """fvcore's (and torchvision's) formula, written out: BCE-with-logits times
    ``(1 - p_t) ** gamma``, alpha_t when ``alpha >= 0`` (fvcore does not install here)."""
    import torch
    import torch.nn.functional as F
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(torch.sum, torch.mean, loss, reduction)


def fvcore_sigmoid_focal_loss_star(inputs, targets, alpha=-1, gamma=1, reduction="none"):
    """fvcore's FL*, written out: ``-logsigmoid(gamma * x * (2t - 1)) / gamma`` (beta = 0)."""
    import torch
    import torch.nn.functional as F
    loss = -F.logsigmoid(gamma * inputs * (targets * 2 - 1)) / gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(torch.sum, torch.mean, loss, reduction)


def mmdet_py_sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25,
                                reduction="mean", avg_factor=None):
    """mmdet's ``py_sigmoid_focal_loss`` (its PyTorch path), written out: index targets with
    background = C (one-hot without it), the sigmoid focal loss, "mean" over the elements
    or ``sum / (avg_factor + eps)`` (mmdet does not install here)."""
    import torch
    import torch.nn.functional as F

    from ._signature import Unsupported
    if pred.ndim != 2:
        raise Unsupported("mmdet's loss takes (N, C) logits")
    c = pred.shape[1]
    t = F.one_hot(target, num_classes=c + 1)[:, :c].to(pred.dtype)
    p = pred.sigmoid()
    pt = (1 - p) * t + p * (1 - t)
    w = (alpha * t + (1 - alpha) * (1 - t)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(pred, t, reduction="none") * w
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return _reduce(torch.sum, torch.mean, loss, reduction)
    if reduction == "mean":
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    return loss if reduction == "none" else loss.sum()


def smp_focal_loss(logits, targets, *, mode="binary", alpha=None, gamma=2.0,
                   reduction="mean"):
    """segmentation_models_pytorch's ``FocalLoss(mode, alpha, gamma)`` (>= 0.6.0), written
    out: ``pt = exp(-BCE)``, ``(1 - pt) ** gamma * BCE``, alpha_t; "multiclass" takes index
    targets on (N, C, ...) logits and averages the per-class one-vs-rest means (smp does
    not install beside torch 2.13)."""
    import torch
    import torch.nn.functional as F

    def one(x, t):
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        loss = (1 - torch.exp(-bce)).pow(gamma) * bce
        if alpha is not None:
            loss = loss * (alpha * t + (1 - alpha) * (1 - t))
        return _reduce(torch.sum, torch.mean, loss, reduction)
    if mode != "multiclass":
        return one(logits, targets.to(logits.dtype))
    parts = [one(logits[:, c], (targets == c).to(logits.dtype))
             for c in range(logits.shape[1])]
    return sum(parts) / len(parts) if reduction != "sum" else sum(parts)


# ---- the peers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One library's focal loss: how to call it from focalx's cases, and what it differs in.

    Attributes:
      name: the library (the table's first column).
      call: its call, as the table shows it.
      function: "module:attribute" of the function compared (the library's own, or a
        wrapper above giving its hyperparameters as keywords).
      loss: "sigmoid", "softmax" or "star".
      signature: focalx's arguments -> the function's.
      focalx: the focalx call that reproduces its numbers (the table's third column).
      kinds: the kinds of disagreement its report shows (asserted by the tests).
      requires: the distribution that provides it (None: a formula written out here).
      environment: variables the comparison needs (Keras' backend).
      note: what else the table says.
    """

    name: str
    call: str
    function: str
    loss: str
    signature: Signature
    focalx: str
    kinds: tuple = ()
    requires: str | None = None
    environment: dict = field(default_factory=dict)
    note: str = ""

    def load(self):
        module, _, attr = self.function.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def installed(self) -> bool:
        if self.requires is None:
            return importlib.util.find_spec("torch") is not None
        return importlib.util.find_spec(self.requires) is not None

    @property
    def key(self) -> str:
        # (no "*": a shell would expand it as a pattern)
        return (self.name.lower().replace(" ", "-").replace("(", "").replace(")", "")
                .replace("*", "-star"))


_TV = Signature(alpha_off=-1, scalar_only=("alpha", "gamma"))
HERE = __name__

PEERS: tuple[Peer, ...] = (
    Peer("torchvision", '`sigmoid_focal_loss(x, t, alpha=0.25, gamma=2, reduction="none")`; '
         "`alpha=-1` = off", "torchvision.ops:sigmoid_focal_loss", "sigmoid", _TV,
         '`sigmoid_focal_loss(x, t, alpha=0.25, gamma=2, reduction="none")`; `alpha=None` = '
         'off. Default reduction differs ("none" vs "mean")',
         ("nan-gradient", "nan-loss", "crash", "precision"), requires="torchvision",
         note="as fvcore's formula below (torchvision pulls torch 2.14, not installed here)"),
    Peer("fvcore", "`sigmoid_focal_loss(alpha=-1, gamma=2)`", f"{HERE}:fvcore_sigmoid_focal_loss",
         "sigmoid", _TV, "`sigmoid_focal_loss(..., alpha=None)` (fvcore's default alpha is off)",
         ("nan-gradient", "nan-loss", "crash", "precision")),
    Peer("fvcore (FL*)", "`sigmoid_focal_loss_star(alpha=-1, gamma=1)`",
         f"{HERE}:fvcore_sigmoid_focal_loss_star", "star",
         Signature(alpha_off=-1, scalar_only=("alpha", "gamma"), drop=("beta",)),
         "`sigmoid_focal_loss_star(..., beta=0.0)`: fvcore fixes beta at 0",
         ("beta",), note="its formula written out (fvcore does not install here)"),
    Peer("optax", "`sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0)` (per element)",
         "optax.losses:sigmoid_focal_loss", "sigmoid",
         Signature(as_arrays=("alpha", "gamma")),
         '`sigmoid_focal_loss(logits, labels, alpha=None, reduction="none")` (focalx\'s default '
         "alpha is 0.25)", (), requires="optax"),
    Peer("Keras", "`BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=2, "
         "from_logits=True, label_smoothing=e)`",
         f"{HERE}:keras_binary_focal_crossentropy", "sigmoid",
         Signature(fixed={"apply_class_balancing": True}, scalar_only=("alpha", "gamma"),
                   alpha_off={"apply_class_balancing": False}, dtype="float32"),
         "`focalx.keras.BinaryFocalLoss(...)`, or the function with `alpha=alpha` (with "
         "`apply_class_balancing=False`, Keras' default, alpha has no effect: `alpha=None`); "
         'the same `label_smoothing`; `reduction="mean"`',
         ("nan-gradient", "nan-loss", "crash"), requires="keras",
         note="on the TensorFlow backend, which recovers the logits; on JAX (and torch) it "
              "clips: `KERAS_BACKEND=jax focalx compare --peer keras` finds the cap too"),
    Peer("Keras (categorical)", "`CategoricalFocalCrossentropy(alpha=0.25, gamma=2, "
         "from_logits=True, label_smoothing=e)` (one-hot targets)",
         f"{HERE}:keras_categorical_focal_crossentropy", "softmax",
         Signature(class_axis=-1, target_format="onehot", alpha_off=1.0, scalar_only=("gamma",),
                   dtype="float32"),
         "`focalx.keras.CategoricalFocalLoss(alpha=0.25, ...)`, or `softmax_focal_loss(x, "
         "onehot, alpha=0.25, label_smoothing=e, axis=-1)`: scalar alpha multiplies every class",
         ("cap", "nan-loss"), requires="keras", note="on every backend"),
    Peer("Paddle", "`F.sigmoid_focal_loss(logit, label, normalizer=n, alpha=0.25, gamma=2.0, "
         "reduction='sum')` (n: a shape-[1] tensor)", f"{HERE}:paddle_sigmoid_focal_loss",
         "sigmoid", Signature(alpha_off=NOT_EXPRESSIBLE, scalar_only=("alpha", "gamma"),
                              min_ndim=2),
         '`sigmoid_focal_loss(logit, label, normalizer=n, reduction="sum")` (n a number or '
         "any array); Paddle cannot turn alpha off, focalx takes `alpha=None`",
         ("nan-gradient", "gradient", "nan-loss", "crash"), requires="paddle",
         note="its gradient at a logit of exactly 0 is wrong"),
    Peer("kornia", "`focal_loss(pred, target, alpha, gamma, reduction, weight, ignore_index=-100)`"
         " (softmax, classes on dim 1)", "kornia.losses:focal_loss", "softmax",
         Signature(class_axis=1, target_format="index", scalar_only=("alpha", "gamma"),
                   min_ndim=2),
         '`softmax_focal_loss(pred, target, alpha=[1-α, α, …, α], reduction="sum", '
         'normalizer=pred.numel())`: class 0 gets 1−α; "none" is per class (sum over dim 1); '
         '"mean" divides by N·C·spatial, ignored pixels included',
         ("alpha-background", "class-axis", "mean-divisor", "ignore-mean", "nan-loss"),
         requires="kornia"),
    Peer("kornia (binary)", "`binary_focal_loss_with_logits(pred, target, alpha=0.25, gamma=2, "
         "reduction, pos_weight, weight, ignore_index=-100)`",
         "kornia.losses:binary_focal_loss_with_logits", "sigmoid",
         Signature(alpha_off=None, scalar_only=("alpha", "gamma"), min_ndim=2),
         "the same names, hard targets; its (C,) `pos_weight`/`weight` act on dim 1: reshape "
         'them to (C, 1) for focalx on (B, C, H) logits; its `ignore_index` defaults to -100 '
         '(focalx: None); its "mean" keeps ignored pixels in the divisor: '
         '`reduction="sum", normalizer=pred.numel()`. Soft targets: t·FL(x, 1) + (1−t)·FL(x, 0)',
         ("soft-targets", "ignore-mean", "nan-loss", "crash"), requires="kornia"),
    Peer("MONAI", "`FocalLoss(gamma, alpha, weight, reduction, use_softmax=False)(x, t)`",
         f"{HERE}:monai_focal_loss", "sigmoid", Signature(scalar_only=("gamma",), min_ndim=2, dtype="float32"),
         "`sigmoid_focal_loss(alpha=α)` with \"mean\" over B·C·spatial; a vector alpha "
         "weights positives only (`alpha=None, weight=where(t == 1, α, 1)`). Soft targets "
         "differ (MONAI uses 2t−1)",
         ("alpha-positives", "soft-targets", "precision", "nan-loss", "crash"),
         requires="monai", note="computes in float32 whatever it is given"),
    Peer("smp", '`FocalLoss("multiclass", alpha, gamma)(x, index_targets)` (>= 0.6.0)',
         f"{HERE}:smp_focal_loss", "sigmoid",
         Signature(class_axis=1, target_format="index", fixed={"mode": "multiclass"},
                   scalar_only=("alpha", "gamma")),
         '`sigmoid_focal_loss(x, onehot_on_axis_1, alpha=alpha or None, reduction="mean")`: '
         "a one-vs-rest sigmoid loss averaged over the classes, not a softmax focal loss",
         ("class-axis", "nan-gradient", "nan-loss"),
         note="its formula written out (smp pulls torch 2.14, not installed here)"),
    Peer("mmdet", "`FocalLoss(use_sigmoid=True, gamma, alpha, loss_weight)(pred, target, weight, "
         "avg_factor)` (index targets, C = background)",
         f"{HERE}:mmdet_py_sigmoid_focal_loss", "sigmoid",
         Signature(class_axis=1, target_format="index", scalar_only=("alpha", "gamma"),
                   alpha_off=NOT_EXPRESSIBLE),
         "`loss_weight * sigmoid_focal_loss(pred, onehot_without_background, alpha=α, "
         'weight=weight, reduction="sum", normalizer=avg_factor)` (mmdet adds float32 eps to '
         "avg_factor)", ("precision",), note="its PyTorch path written out (mmdet does not install here)"),
)
BY_KEY = {p.key: p for p in PEERS}


# ---- the table ------------------------------------------------------------------------

BEGIN = "<!-- focalx:peers (generated by python -m focalx.testing.peers --markdown) -->"
END = "<!-- focalx:end peers -->"


def _kinds_text(peer) -> str:
    if not peer.kinds:
        return "agrees on every expressible golden case"
    return ", ".join(f"**{k}**" for k in peer.kinds)


def markdown() -> str:
    """The migration table's rows for the peers (between the BEGIN/END markers)."""
    lines = [BEGIN, "| library | its call | focalx | `focalx compare` finds |", "|---|---|---|---|"]
    for p in PEERS:
        note = f". {p.note[0].upper()}{p.note[1:]}" if p.note else ""
        lines.append(f"| {p.name} | {p.call} | {p.focalx} | {_kinds_text(p)}{note} |")
    from ._compare import KINDS
    used = [k for k in KINDS if any(k in p.kinds for p in PEERS)]
    legend = ("The kinds (each found by probes: the spec recomputed under that convention "
              "matches the library's values):")
    lines += ["", legend, ""]
    lines += [f"- **{k}**: {KINDS[k]}" for k in used]
    lines.append(END)
    return "\n".join(lines)


def run(peer: Peer, cases=None):
    """compare() on one peer, in this process."""
    from ._compare import compare
    return compare(peer.load(), loss=peer.loss, signature=peer.signature, cases=cases)


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m focalx.testing.peers")
    ap.add_argument("--markdown", action="store_true", help="print the migration table rows")
    ap.add_argument("--write", metavar="PATH", help="replace the rows in PATH (docs/migration.md)")
    args = ap.parse_args(argv)
    text = markdown()
    if args.write:
        from pathlib import Path
        path = Path(args.write)
        doc = path.read_text()
        if BEGIN not in doc or END not in doc:
            print(f"{path}: no {BEGIN} ... {END} block", file=sys.stderr)
            return 1
        head, rest = doc.split(BEGIN, 1)
        path.write_text(head + text + rest.split(END, 1)[1])
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
