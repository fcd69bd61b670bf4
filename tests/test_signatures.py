"""The public signatures are written once (focalx/_signatures.py) and generated into each
module: the generated blocks are current, and every installed backend's functions have
exactly the table's parameters, defaults and class axis at run time."""

from __future__ import annotations

import importlib
import inspect

import pytest

from focalx import _signatures, _spec
from focalx.backends import REGISTRY

from .conftest import import_backend

LOSSES = list(_signatures.LOSSES)


def test_every_generated_block_is_what_the_table_makes():
    for name, target in _signatures.TARGETS.items():
        text = (_signatures.root() / target.path).read_text()
        blocks = _signatures._BLOCK.findall(text)
        assert sorted(blocks) == sorted(LOSSES), (target.path, blocks)
        assert _signatures.regenerate(text, name) == text, \
            f"{target.path} is stale: run python focalx/_signatures.py"


def test_a_changed_default_makes_the_blocks_stale(monkeypatch):
    loss = _signatures.LOSSES["sigmoid_focal_loss"]
    changed = loss._replace(params=(loss.params[0]._replace(default=3.0),) + loss.params[1:])
    text = (_signatures.root() / _signatures.TARGETS["jax"].path).read_text()
    monkeypatch.setitem(_signatures.LOSSES, "sigmoid_focal_loss", changed)
    new = _signatures.regenerate(text, "jax")
    assert new != text and "gamma: float | Sequence[float] | jax.Array | np.ndarray = 3.0" in new


def test_the_defaults_are_the_documented_ones():
    """The table's defaults are the ones docs/definitions.md documents (written out here,
    not computed: a change to the table must change this test on purpose)."""
    common = dict(weight=None, label_smoothing=0.0, reduction="mean", normalizer=None)
    assert _spec.DEFAULTS == {
        "sigmoid_focal_loss": dict(gamma=2.0, alpha=0.25, pos_weight=None, ignore_index=None,
                                   from_logits=True, epsilon=0.0, **common),
        "softmax_focal_loss": dict(gamma=2.0, alpha=None, ignore_index=-100, from_logits=True,
                                   epsilon=0.0, **common),
        "sigmoid_focal_loss_star": dict(gamma=1.0, beta=0.0, alpha=None, ignore_index=None,
                                        **common),
        "quality_focal_loss": dict(beta=2.0, weight=None, reduction="mean", normalizer=None),
        "varifocal_loss": dict(alpha=0.75, gamma=2.0, iou_weighted=True, weight=None,
                               reduction="mean", normalizer=None),
        "distribution_focal_loss": dict(weight=None, ignore_index=None, reduction="mean",
                                        normalizer=None),
        "asymmetric_loss": dict(gamma_pos=0.0, gamma_neg=4.0, clip=0.05, ignore_index=None,
                                **common),
        "asymmetric_softmax_loss": dict(gamma_pos=0.0, gamma_neg=4.0, ignore_index=-100,
                                        label_smoothing=0.1, reduction="mean",
                                        normalizer=None),
        "linear_softmax_focal_loss": dict(linear_bias=None, gamma=2.0, alpha=None,
                                          ignore_index=-100, chunk_size=None, **common),
    }


def _keyword_only(fn):
    sig = inspect.signature(fn)
    positional = [n for n, p in sig.parameters.items()
                  if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    return positional, [(n, p.default) for n, p in sig.parameters.items()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY]


@pytest.mark.parametrize("target", ["focalx", *REGISTRY])
@pytest.mark.parametrize("loss", LOSSES)
def test_each_modules_signature_is_the_tables(target, loss):
    if target != "focalx":
        import_backend(REGISTRY[target].module)
    module = importlib.import_module(REGISTRY[target].public[0] if target != "focalx"
                                     else "focalx")
    positional, keywords = _keyword_only(getattr(module, loss))
    assert positional == list(_signatures.LOSSES[loss].inputs)
    assert keywords == [(p.name, p.default) for p in _signatures.params(loss, target)]
    if loss == "softmax_focal_loss" and target != "focalx":
        assert dict(keywords)["axis"] == REGISTRY[target].class_axis
