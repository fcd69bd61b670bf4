"""The declarative description of a user's focal-loss function: its parameter names and
conventions, and how one golden case becomes one call of it."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

#: what a function that lacks a parameter is assumed to do (a case needing anything else is
#: not expressible): no class balancing, no weights, no smoothing, per-element output
ASSUMED = {"alpha": None, "pos_weight": None, "weight": None, "ignore_index": None,
           "label_smoothing": 0.0, "epsilon": 0.0, "normalizer": None, "from_logits": True,
           "reduction": "none"}
#: focalx's keyword arguments a signature can map (besides the logits and targets)
KWARGS = ("gamma", "alpha", "beta", "pos_weight", "weight", "ignore_index", "label_smoothing",
          "epsilon", "normalizer", "from_logits", "reduction", "axis")
TARGET_FORMATS = ("any", "index", "onehot")
#: Signature.alpha_off for a function that cannot turn alpha off (Paddle's)
NOT_EXPRESSIBLE = "not expressible"


class Unsupported(Exception):
    """A case the function cannot express under its signature (reported, not a failure)."""


@dataclass(frozen=True)
class Signature:
    """How to call a focal-loss function: its names and conventions, focalx's on the left.

    Attributes:
      logits, targets: the parameter name or position (int) of each array; Keras'
        ``loss(y_true, y_pred)`` is ``logits=1, targets=0``.
      names: focalx keyword -> the function's parameter name, where they differ
        (``{"alpha": "weight_pos"}``); a focalx keyword the function does not take is
        found from its signature and the case then needs focalx's value to be the
        function's assumed one (see `assumes`).
      alpha_off: the value the function takes for "no alpha" (torchvision and fvcore:
        -1), or a mapping of keyword arguments passed instead of alpha (Keras:
        ``{"apply_class_balancing": False}``), or NOT_EXPRESSIBLE (Paddle's).
      reductions: focalx's reduction name -> the function's (``{"none": "elementwise"}``).
      class_axis: softmax only: the class axis the function expects (None: the case's own
        ``axis``, passed when the function takes one, else the framework's convention).
      target_format: softmax: ``"index"`` (class indices only), ``"onehot"`` (indices
        are turned into one-hot rows along the class axis) or ``"any"`` (passed as given);
        sigmoid: ``"index"`` runs index-target cases, one-hot on ``class_axis``, against
        the sigmoid loss (segmentation libraries' "multiclass" sigmoid losses).
      fixed: keyword arguments passed on every call (``{"from_logits": True}``).
      assumes: what the function does for a focalx keyword it does not take
        (``{"gamma": 2.0}``); defaults: no alpha, no weights, no smoothing,
        ``reduction="none"``.
      scalar_only: the focalx keywords the function takes only as numbers (torchvision's
        alpha and gamma): a case giving a vector is not expressible.
      drop: focalx keywords never passed (the function has none, and its fixed
        behaviour is what the probes should find: fvcore's FL* has no beta).
      as_arrays: focalx keywords whose vectors are passed as the framework's arrays
        (optax's alpha and gamma; weights and pos_weight always are).
      min_ndim: logits with fewer axes get leading axes of 1 (kornia and MONAI take
        (B, C, ...) only); the loss and gradient lose them again.
      framework: "torch", "jax", "tensorflow", "paddle" or "numpy"; None: detected.
      dtype: the logits' dtype ("float64" or "float32").
    """

    logits: str | int = 0
    targets: str | int = 1
    names: Mapping[str, str] = field(default_factory=dict)
    alpha_off: Any = None
    reductions: Mapping[str, str] = field(default_factory=dict)
    class_axis: int | None = None
    target_format: str = "any"
    fixed: Mapping[str, Any] = field(default_factory=dict)
    assumes: Mapping[str, Any] = field(default_factory=dict)
    scalar_only: tuple = ()
    drop: tuple = ()
    as_arrays: tuple = ()
    min_ndim: int = 0
    framework: str | None = None
    dtype: str = "float64"

    def __post_init__(self):
        for name in ("logits", "targets"):
            v = getattr(self, name)
            if not isinstance(v, (str, int)) or isinstance(v, bool):
                raise TypeError(f"{name} must be a parameter name or position, got {v!r}")
        if self.logits == self.targets:
            raise ValueError(f"logits and targets must differ, both are {self.logits!r}")
        for name in ("names", "reductions", "fixed", "assumes"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be a mapping, got "
                                f"{type(getattr(self, name)).__name__}")
        bad = set(self.names) - set(KWARGS)
        if bad:
            raise ValueError(f"names: unknown focalx keyword(s) {sorted(bad)}; known: {KWARGS}")
        if not all(isinstance(v, str) for v in self.names.values()):
            raise TypeError(f"names: the function's parameter names must be strings, got "
                            f"{dict(self.names)!r}")
        if self.target_format not in TARGET_FORMATS:
            raise ValueError(f"target_format must be one of {TARGET_FORMATS}, "
                             f"got {self.target_format!r}")
        if self.class_axis is not None and (not isinstance(self.class_axis, int)
                                            or isinstance(self.class_axis, bool)):
            raise TypeError(f"class_axis must be an int or None, got {self.class_axis!r}")
        for name in ("scalar_only", "drop", "as_arrays"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or set(v) - set(KWARGS):
                raise ValueError(f"{name} must be a tuple of focalx keywords {KWARGS}, "
                                 f"got {v!r}")
        if not isinstance(self.min_ndim, int) or isinstance(self.min_ndim, bool) \
                or self.min_ndim < 0:
            raise ValueError(f"min_ndim must be an int >= 0, got {self.min_ndim!r}")
        if self.framework is not None:
            from ._frameworks import FRAMEWORKS
            if self.framework not in FRAMEWORKS:
                raise ValueError(f"framework must be one of {FRAMEWORKS} or None, "
                                 f"got {self.framework!r}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")

    @classmethod
    def parse(cls, items, base: Signature | None = None) -> Signature:
        """A signature from ``key=value`` strings (the command line's ``--map``): a field
        of this class (``alpha_off=-1``, ``class_axis=1``, ``target_format=onehot``), or a
        focalx keyword renamed (``alpha=weight_pos``; ``reduction=none`` fixes the
        function's reduction: it has none), ``fixed.NAME=VALUE`` (passed on every call),
        ``assumes.KEYWORD=VALUE`` (what the function does for a focalx keyword it lacks:
        ``assumes.gamma=2.0``) or ``reductions.NAME=THEIRS``; values are Python literals or
        plain text."""
        if isinstance(items, str):
            raise TypeError(f"items must be a list of 'key=value' strings, got the string "
                            f"{items!r}")
        sig = base or cls()
        own = {f.name for f in fields(cls)}
        # the fields are checked together at the end (logits=1 then targets=0 passes
        # through logits == targets)
        f = {name: getattr(sig, name) for name in own}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"--map takes key=value, got {item!r}")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
            if key == "reduction" and value in ("none", "mean", "sum"):
                f.update(assumes={**f["assumes"], "reduction": value},
                         names={**f["names"], "reduction": ""})
            elif key in ("scalar_only", "drop", "as_arrays"):
                f[key] = tuple(str(value).split(","))
            elif key in own and key not in ("names", "reductions", "fixed", "assumes"):
                f[key] = value
            elif key in KWARGS:
                f["names"] = {**f["names"], key: str(value)}
            elif key.startswith("fixed."):
                f["fixed"] = {**f["fixed"], key[6:]: value}
            elif key.startswith("assumes.") and key[8:] in KWARGS:
                f["assumes"] = {**f["assumes"], key[8:]: value}
            elif key.startswith("reductions."):
                f["reductions"] = {**f["reductions"], key[11:]: str(value)}
            else:
                raise ValueError(f"--map: unknown key {key!r}: a Signature field "
                                 f"({sorted(own)}), a focalx keyword ({KWARGS}), "
                                 "fixed.NAME, assumes.KEYWORD or reductions.NAME")
        return replace(sig, **f)


def accepted(fn) -> tuple[set | None, list]:
    """(keyword names the function takes, or None for **kwargs / unknown; positional names)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None, []
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None, [p.name for p in params]
    return ({p.name for p in params if p.kind is not p.POSITIONAL_ONLY},
            [p.name for p in params])


def one_hot(index: np.ndarray, classes: int, axis: int) -> np.ndarray:
    """Index targets (ignored entries out of range) as one-hot rows on `axis`."""
    eye = (index[..., None] == np.arange(classes)).astype(np.float64)
    return np.moveaxis(eye, -1, axis % (index.ndim + 1))


def build_call(sig: Signature, fn, variant: str, kwargs: dict, ndim: int, default_axis: int):
    """(keyword arguments for `fn`, the class axis to move the logits to or None, target
    conversion) for one case's full focalx `kwargs`; raises Unsupported."""
    takes, _ = accepted(fn)
    out = dict(sig.fixed)
    move = None
    for key, value in kwargs.items():
        if key in sig.drop:
            continue
        name = sig.names.get(key, key)
        if key == "axis":
            if name and (takes is None or name in takes):
                out[name] = value
            else:
                want = default_axis if sig.class_axis is None else sig.class_axis
                if value % ndim != want % ndim:
                    move = want
            continue
        has = bool(name) and (takes is None or name in takes)
        if not has:
            assumed = sig.assumes.get(key, ASSUMED.get(key, "<not expressible>"))
            if not _same(value, assumed):
                raise Unsupported(f"{key}={_short(value)} (the function has no {key!r})")
            continue
        if key in sig.scalar_only and isinstance(value, (list, tuple, np.ndarray)):
            raise Unsupported(f"{key} as a vector (the function takes a number)")
        if key == "alpha" and value is None:
            if isinstance(sig.alpha_off, str) and sig.alpha_off == NOT_EXPRESSIBLE:
                raise Unsupported("alpha=None (the function cannot turn alpha off)")
            if isinstance(sig.alpha_off, Mapping):
                out.update(sig.alpha_off)
                continue
            value = sig.alpha_off
        if key == "reduction":
            value = sig.reductions.get(value, value)
        out[name] = value
    return out, move


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        try:
            return bool(np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))
        except (TypeError, ValueError):
            return False
    return a == b or (a is None and b is None)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 30 else text[:27] + "..."
