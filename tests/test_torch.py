"""The PyTorch backend: parity with torch's own losses, gradients, numerics, modules."""

from __future__ import annotations

import inspect
import itertools
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import import_backend, torch_devices

torch = import_backend("torch")
F = torch.nn.functional

import focalx  # noqa: E402
import focalx.torch as ft  # noqa: E402
from focalx import _numpy as ref  # noqa: E402

RTOL64 = 1e-10
GAMMAS = [0.0, 0.25, 0.5, 1.0, 2.0, 5.0]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _logits(shape, seed=0, scale=3.0, dtype=torch.float64, device="cpu"):
    return (torch.randn(shape, generator=_gen(seed), dtype=torch.float64) * scale).to(
        device=device, dtype=dtype)


def _reset_dynamo():
    """torch._dynamo.reset() once the background compile thread is idle: a reset while it
    compiles a kernel queued by an earlier test raced with it ("dictionary changed size
    during iteration" in dynamo's backend cache, seen once under xdist)."""
    ft.wait_for_kernels(timeout=300)
    torch._dynamo.reset()


def _assert_close(a, b, rtol=RTOL64, atol=0.0):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, check_dtype=False)


def torchvision_formula(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss's definition (alpha < 0 switches alpha off)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _reference_grad(fn, x, *args, **kw):
    """(loss, grad) from the float64 NumPy reference, on CPU numpy copies."""
    conv = [(a.detach().cpu().double() if a.dtype.is_floating_point else a.detach().cpu()).numpy()
            if isinstance(a, torch.Tensor) else a for a in args]
    return fn(x.detach().cpu().double().numpy(), *conv, **kw)


class TestSigmoidFocalLoss:
    @pytest.mark.parametrize("gamma", GAMMAS)
    @pytest.mark.parametrize("alpha", [None, 0.0, 0.25, 0.58, 1.0])
    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    @pytest.mark.parametrize("targets", ["hard", "soft"])
    def test_equals_torchvision_formula_float64(self, gamma, alpha, reduction, targets):
        x = _logits((16, 5), seed=1)
        t = torch.rand((16, 5), generator=_gen(2), dtype=torch.float64)
        if targets == "hard":
            t = (t < 0.3).double()
        got = ft.sigmoid_focal_loss(x, t, gamma=gamma, alpha=alpha, reduction=reduction)
        want = torchvision_formula(x, t, alpha=-1 if alpha is None else alpha, gamma=gamma,
                                   reduction=reduction)
        _assert_close(got, want)

    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    @pytest.mark.parametrize("pos_weight", [None, "vector", "scalar"])
    @pytest.mark.parametrize("weight", [None, "rows"])
    def test_gamma0_alpha_none_equals_bce_with_logits(self, reduction, pos_weight, weight):
        x = _logits((8, 4, 3), seed=3)
        t = torch.rand((8, 4, 3), generator=_gen(4), dtype=torch.float64)
        pw = {None: None, "vector": torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64),
              "scalar": torch.tensor(4.0, dtype=torch.float64)}[pos_weight]
        w = None if weight is None else torch.rand((8, 1, 1), generator=_gen(5),
                                                   dtype=torch.float64)
        got = ft.sigmoid_focal_loss(x, t, gamma=0.0, alpha=None, pos_weight=pw, weight=w,
                                    reduction=reduction)
        want = F.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw,
                                                  reduction=reduction)
        _assert_close(got, want)
        module = ft.SigmoidFocalLoss(weight=w, pos_weight=pw, reduction=reduction, gamma=0,
                                     alpha=None)
        _assert_close(module(x, t), torch.nn.BCEWithLogitsLoss(
            weight=w, pos_weight=pw, reduction=reduction)(x, t))

    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
    @pytest.mark.parametrize("options", [
        dict(), dict(alpha=None), dict(alpha=[0.1, 0.5, 0.9]), dict(pos_weight=[2.0, 0.5, 1.0]),
        dict(weight="elementwise"), dict(label_smoothing=0.1), dict(ignore_index=-1),
        dict(reduction="none"), dict(reduction="sum", normalizer=3.0),
        dict(from_logits=False),
    ], ids=lambda o: ",".join(o) or "default")
    def test_gradcheck(self, gamma, options):
        options = dict(options)
        x = _logits((5, 3), seed=6, scale=2.0)
        t = torch.rand((5, 3), generator=_gen(7), dtype=torch.float64)
        if options.get("weight") == "elementwise":
            options["weight"] = torch.rand((5, 3), generator=_gen(8), dtype=torch.float64)
        if "ignore_index" in options:
            t = t.round()
            t[0, 0] = t[2, 1] = -1
        if options.get("from_logits") is False:
            x = torch.sigmoid(x)  # probabilities away from 0 and 1
        x.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda v: ft.sigmoid_focal_loss(v, t, gamma=gamma, **options), (x,))

    def test_torchvision_formula_is_nan_where_focalx_is_not(self):
        # anchors.md C1: float32, gamma=0.5, x=[40, -40, 3], t=[1, 0, 1].
        x = torch.tensor([40.0, -40.0, 3.0], requires_grad=True)
        t = torch.tensor([1.0, 0.0, 1.0])
        (g_tv,) = torch.autograd.grad(torchvision_formula(x, t, gamma=0.5).sum(), x)
        (g,) = torch.autograd.grad(ft.sigmoid_focal_loss(x, t, gamma=0.5, reduction="sum"), x)
        assert torch.isnan(g_tv).any()
        assert torch.isfinite(g).all()

    @pytest.mark.parametrize("options", [
        dict(), dict(alpha=[0.2, 0.7, 0.4]), dict(pos_weight=[3.0, 1.0, 0.5]),
        dict(label_smoothing=0.2, gamma=0.5), dict(ignore_index=-1, reduction="sum"),
        dict(weight=[[0.0], [1.0], [2.0], [0.5]], reduction="none"),
        dict(normalizer=7.0, reduction="sum"), dict(from_logits=False, gamma=1.5),
    ], ids=lambda o: ",".join(o) or "default")
    def test_matches_numpy_reference(self, options):
        x = _logits((4, 3), seed=9)
        t = (torch.rand((4, 3), generator=_gen(10), dtype=torch.float64) < 0.5).double()
        if options.get("ignore_index") == -1:
            t[1, 2] = -1
        if options.get("from_logits") is False:
            x = torch.sigmoid(x)
        x.requires_grad_(True)
        loss = ft.sigmoid_focal_loss(x, t, **options)
        (g,) = torch.autograd.grad(loss.sum(), x)
        want, want_g = _reference_grad(ref.sigmoid_focal_loss_and_grad, x, t, **options)
        _assert_close(loss, torch.from_numpy(np.asarray(want)), rtol=1e-12)
        _assert_close(g, torch.from_numpy(want_g), rtol=1e-12, atol=1e-300)

    def test_normalizer_tensor_equals_number(self):
        x, t = _logits((6, 2), seed=11), (torch.rand(6, 2, generator=_gen(12)) < 0.5).double()
        num_pos = t.sum()
        _assert_close(ft.sigmoid_focal_loss(x, t, reduction="sum", normalizer=num_pos),
                      ft.sigmoid_focal_loss(x, t, reduction="sum") / num_pos)

    def test_ignore_index_leaves_mean_denominator(self):
        x = _logits((2, 3), seed=13)
        t = torch.tensor([[1.0, 0.0, -1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
        keep = t != -1
        per = torchvision_formula(x, torch.where(keep, t, 0.0)) * keep
        _assert_close(ft.sigmoid_focal_loss(x, t, ignore_index=-1), per.sum() / 3)

    def test_empty_and_all_ignored_mean_is_zero(self):
        x = torch.zeros((0, 4), requires_grad=True)
        loss = ft.sigmoid_focal_loss(x, torch.zeros((0, 4)))
        assert loss.item() == 0.0
        x = torch.ones((2, 2), requires_grad=True)
        loss = ft.sigmoid_focal_loss(x, -torch.ones((2, 2)), ignore_index=-1)
        loss.backward()
        assert loss.item() == 0.0 and torch.all(x.grad == 0)


class TestSoftmaxFocalLoss:
    @pytest.mark.parametrize("weight", [False, True])
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    @pytest.mark.parametrize("shape", [(7, 4), (3, 4, 2, 5), (4,)], ids=str)
    @pytest.mark.parametrize("targets, ignore", [("index", False), ("index", True),
                                                 ("probs", False)])
    def test_gamma0_equals_cross_entropy(self, weight, ignore, label_smoothing, reduction,
                                         shape, targets):
        x = _logits(shape, seed=14)
        C = shape[1] if len(shape) > 1 else shape[0]
        tshape = (shape[:1] + shape[2:]) if len(shape) > 1 else ()
        y = torch.randint(0, C, tshape, generator=_gen(15))
        if ignore:
            y.view(-1)[1::3] = -100  # (a 0-d target stays valid: all-ignored is tested apart)
        if targets == "probs":
            y = torch.softmax(_logits(shape, seed=16), dim=1 if len(shape) > 1 else 0)
        w = torch.rand(C, generator=_gen(17), dtype=torch.float64) + 0.1 if weight else None
        kw = dict(weight=w, label_smoothing=label_smoothing, reduction=reduction)
        got = ft.softmax_focal_loss(x, y, gamma=0.0, **kw)
        want = F.cross_entropy(x, y, **kw)
        _assert_close(got, want)
        _assert_close(ft.FocalLoss(gamma=0, **kw)(x, y), torch.nn.CrossEntropyLoss(**kw)(x, y))

    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
    @pytest.mark.parametrize("options", [
        dict(), dict(alpha=0.25), dict(alpha=[0.2, 1.0, 0.5, 0.7]),
        dict(weight=[1.0, 2.0, 0.5, 1.5]), dict(label_smoothing=0.1),
        dict(ignore_index=1), dict(reduction="none"), dict(reduction="sum", normalizer=2.5),
        dict(probs=True), dict(probs=True, label_smoothing=0.2), dict(nd=True),
        dict(from_logits=False), dict(from_logits=False, label_smoothing=0.1),
        dict(from_logits=False, probs=True), dict(weight=[1.0, 2.0, 0.5, 1.5], ignore_index=0),
        dict(normalizer="tensor", reduction="sum"), dict(nd=True, reduction="none"),
    ], ids=lambda o: ",".join(o) or "default")
    def test_gradcheck(self, gamma, options):
        options = dict(options)
        if options.get("normalizer") == "tensor":
            options["normalizer"] = torch.tensor(3.5, dtype=torch.float64)
        probs, nd = options.pop("probs", False), options.pop("nd", False)
        shape = (3, 4, 2) if nd else (5, 4)
        x = _logits(shape, seed=18, scale=2.0)
        y = torch.randint(0, 4, (shape[0],) + shape[2:], generator=_gen(19))
        if probs:
            y = torch.softmax(_logits(shape, seed=20), dim=1)
        if options.get("from_logits") is False:
            x = torch.softmax(x, dim=1)
        x.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda v: ft.softmax_focal_loss(v, y, gamma=gamma, **options), (x,))

    @pytest.mark.parametrize("options", [
        dict(), dict(alpha=[0.2, 1.0, 0.5]), dict(weight=[1.0, 3.0, 0.5], ignore_index=2),
        dict(label_smoothing=0.3, gamma=0.5), dict(probs=True), dict(from_logits=False),
    ], ids=lambda o: ",".join(o) or "default")
    def test_matches_numpy_reference(self, options):
        options = dict(options)
        x = _logits((6, 3), seed=21)
        y = torch.randint(0, 3, (6,), generator=_gen(22))
        if options.pop("probs", False):
            y = torch.softmax(_logits((6, 3), seed=23), dim=1)
        if options.get("from_logits") is False:
            x = torch.softmax(x, dim=1)
        x.requires_grad_(True)
        loss = ft.softmax_focal_loss(x, y, **options)
        (g,) = torch.autograd.grad(loss, x)
        want, want_g = _reference_grad(ref.softmax_focal_loss_and_grad, x, y, axis=1, **options)
        _assert_close(loss, torch.tensor(float(want), dtype=torch.float64), rtol=1e-12)
        _assert_close(g, torch.from_numpy(want_g), rtol=1e-12, atol=1e-300)

    def test_all_ignored_mean_is_zero_not_nan(self):
        x = torch.randn(3, 4, requires_grad=True)
        y = torch.full((3,), -100)
        assert torch.isnan(F.cross_entropy(x, y))  # torch's own: 0/0
        loss = ft.softmax_focal_loss(x, y)
        loss.backward()
        assert loss.item() == 0.0 and torch.all(x.grad == 0)

    def test_focal_factor_downweights_easy_samples(self):
        x = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]], dtype=torch.float64)
        y = torch.tensor([0, 0])
        ce = F.cross_entropy(x, y, reduction="none")
        fl = ft.softmax_focal_loss(x, y, gamma=2.0, reduction="none")
        p = torch.softmax(x, 1)[:, 0]
        _assert_close(fl, (1 - p) ** 2 * ce)
        assert fl[0] / ce[0] < fl[1] / ce[1]


class TestSigmoidFocalLossStar:
    @pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
    @pytest.mark.parametrize("beta", [0.0, 1.0, -1.5])
    def test_equals_definition_and_gradcheck(self, gamma, beta):
        x = _logits((6, 2), seed=24).requires_grad_(True)
        t = (torch.rand((6, 2), generator=_gen(25)) < 0.5).double()
        got = ft.sigmoid_focal_loss_star(x, t, gamma=gamma, beta=beta, reduction="none")
        # fvcore's definition, plus beta: -log sigmoid(gamma * x * (2t-1) + beta) / gamma
        want = -F.logsigmoid(gamma * x * (2 * t - 1) + beta) / gamma
        _assert_close(got, want)
        assert torch.autograd.gradcheck(
            lambda v: ft.sigmoid_focal_loss_star(v, t, gamma=gamma, beta=beta, alpha=0.25,
                                                 label_smoothing=0.1), (x,))


class TestDtypesAndDevices:
    @pytest.mark.parametrize("device", torch_devices())
    def test_autocast_returns_float32_like_torch_losses(self, device):
        lin = torch.nn.Linear(6, 3).to(device)
        inp = torch.randn(8, 6, device=device)
        y = torch.randint(0, 3, (8,), device=device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = lin(inp)
            assert logits.dtype == torch.bfloat16
            loss = ft.softmax_focal_loss(logits, y)
            assert loss.dtype == F.cross_entropy(logits, y).dtype == torch.float32
        loss.backward()
        assert torch.isfinite(lin.weight.grad).all()

    def test_float16_gradients_survive_loss_scaling(self):
        """The 1/N of a mean and a GradScaler's scale meet in float32, not in float16."""
        x32 = torch.randn(256, 256, generator=_gen(40)) * 3
        t = (torch.rand(256, 256, generator=_gen(41)) < 0.1).float()
        x16 = x32.half().requires_grad_(True)
        scale = 1024.0
        (ft.sigmoid_focal_loss(x16, t.half()).float() * scale).backward()
        x_ref = x16.detach().float().requires_grad_(True)
        (ft.sigmoid_focal_loss(x_ref, t) * scale).backward()
        want = x_ref.grad
        got = x16.grad.float()
        representable = want.abs() > 2 ** -14  # float16 normal range
        assert (got[representable] == 0).float().mean() < 1e-3
        rel = ((got - want).abs() / want.abs())[representable]
        assert rel.max() < 2 ** -10


class TestAutogradAndCompile:
    def test_saves_one_full_size_tensor(self):
        x = torch.randn(64, 8, requires_grad=True)
        t = (torch.rand(64, 8) < 0.2).float()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s,
                                                      lambda s: s):
            ft.sigmoid_focal_loss(x, t)
            ft.softmax_focal_loss(x, t.argmax(1))
        assert [tuple(s.shape) for s in saved] == [(64, 8), (64, 8)]

    def test_no_grad_saves_nothing_and_matches(self):
        x, t = torch.randn(5, 3, requires_grad=True), (torch.rand(5, 3) < 0.5).float()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s,
                                                      lambda s: s):
            with torch.no_grad():
                a = ft.sigmoid_focal_loss(x, t)
        assert saved == [] and a.grad_fn is None
        _assert_close(a, ft.sigmoid_focal_loss(x, t).detach(), rtol=0)

    @pytest.mark.parametrize("rows", [64, 1 << 12])  # op by op, and the fused kernel
    def test_backward_twice_with_retain_graph_gives_the_same_gradient(self, rows):
        # backward scales the saved gradient in place only when it is used once
        x = torch.randn(rows, 80, requires_grad=True)
        t = (torch.rand(rows, 80) < 0.2).float()
        for loss_fn in (lambda: ft.sigmoid_focal_loss(x, t),
                        lambda: ft.softmax_focal_loss(x, t.argmax(1), reduction="sum"),
                        lambda: ft.softmax_focal_loss(x, t.argmax(1), reduction="none")):
            loss = loss_fn()
            go = torch.rand_like(loss) + 0.5
            (first,) = torch.autograd.grad(loss, x, go, retain_graph=True)
            (second,) = torch.autograd.grad(loss, x, go)
            torch.testing.assert_close(second, first, rtol=0, atol=0)
            (fresh,) = torch.autograd.grad(loss_fn(), x, go)
            torch.testing.assert_close(fresh, first, rtol=0, atol=0)
            x.grad = None
            loss_fn().backward(go)  # the in-place path, through .backward
            torch.testing.assert_close(x.grad, first, rtol=0, atol=0)
            x.grad = None

    def test_batched_backward_and_hooked_saved_tensors_are_not_overwritten(self):
        x = torch.randn(8, 5, requires_grad=True)
        t = (torch.rand(8, 5) < 0.3).float()
        for reduction in ("none", "sum"):
            loss = ft.sigmoid_focal_loss(x, t, reduction=reduction)
            gos = torch.stack([torch.ones_like(loss), 2 * torch.ones_like(loss)])
            (g,) = torch.autograd.grad(loss, x, gos, is_grads_batched=True)
            torch.testing.assert_close(g[1], 2 * g[0])
        jac = torch.autograd.functional.jacobian(
            lambda a: ft.sigmoid_focal_loss(a, t, reduction="none"), x.detach(), vectorize=True)
        want = torch.autograd.functional.jacobian(
            lambda a: ft.sigmoid_focal_loss(a, t, reduction="none"), x.detach())
        torch.testing.assert_close(jac, want)
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda s: kept.append(s) or s,
                                                      lambda s: s):
            loss = ft.sigmoid_focal_loss(x, t)
        before = kept[-1].clone()
        torch.autograd.grad(loss, x, torch.tensor(3.0))
        torch.testing.assert_close(kept[-1], before, rtol=0, atol=0)

    def test_inductor_fullgraph_matches_eager(self):
        _reset_dynamo()
        f = torch.compile(lambda x, y: ft.sigmoid_focal_loss(x, y, gamma=0.5), fullgraph=True)
        x = torch.randn(32, 5, requires_grad=True)
        y = (torch.rand(32, 5) < 0.2).float()
        out = f(x, y)
        (g,) = torch.autograd.grad(out, x)
        (g_eager,) = torch.autograd.grad(ft.sigmoid_focal_loss(x, y, gamma=0.5), x)
        _assert_close(out, ft.sigmoid_focal_loss(x, y, gamma=0.5), rtol=1e-5)
        _assert_close(g, g_eager, rtol=1e-5, atol=1e-8)

    def test_second_derivative_raises_instead_of_dropping_curvature(self):
        x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        loss = ft.sigmoid_focal_loss(x, torch.ones(4, 3, dtype=torch.float64)) + (x ** 2).sum()
        with pytest.raises(RuntimeError, match="twice"):
            torch.autograd.grad(loss, x, create_graph=True)

    @pytest.mark.parametrize("name", ["sigmoid", "softmax", "star"])
    @pytest.mark.parametrize("dynamic", [None, True])
    def test_compile_with_changing_float_hyperparameters(self, name, dynamic):
        calls = {
            "sigmoid": lambda x, y, g: ft.sigmoid_focal_loss(x, y, gamma=g, alpha=g / 4,
                                                             label_smoothing=g / 10),
            "softmax": lambda x, y, g: ft.softmax_focal_loss(x, y.argmax(1), gamma=g,
                                                             label_smoothing=g / 10),
            "star": lambda x, y, g: ft.sigmoid_focal_loss_star(x, y, gamma=g, beta=g),
        }
        f = calls[name]
        _reset_dynamo()
        compiled = torch.compile(f, fullgraph=True, dynamic=dynamic, backend="aot_eager")
        x, y = torch.randn(6, 4), (torch.rand(6, 4) < 0.4).float()
        for g in (1.0, 2.0, 0.5, 2.5):
            _assert_close(compiled(x, y, g), f(x, y, g), rtol=1e-6)

    @pytest.mark.parametrize("module", [ft.FocalLoss, ft.SigmoidFocalLoss])
    def test_compiled_module_follows_its_gamma(self, module):
        _reset_dynamo()
        m = module(gamma=2.0)
        compiled = torch.compile(m, fullgraph=True, dynamic=True, backend="aot_eager")
        x = torch.randn(6, 4)
        y = torch.randint(0, 4, (6,)) if module is ft.FocalLoss else (torch.rand(6, 4) < 0.4).float()
        for g in (2.0, 0.5, 3.0):
            m.gamma = g
            _assert_close(compiled(x, y), m(x, y), rtol=1e-6)

    @pytest.mark.parametrize("smoothing", [0.0, 0.1])
    @pytest.mark.parametrize("bad", [7, -1, 255])
    def test_compiled_out_of_range_index_raises(self, smoothing, bad):
        _reset_dynamo()
        f = torch.compile(lambda x, y: ft.softmax_focal_loss(x, y, label_smoothing=smoothing),
                          fullgraph=True, backend="aot_eager")
        x = torch.randn(4, 3)
        assert torch.isfinite(f(x, torch.tensor([0, 1, 2, 1])))
        with pytest.raises(RuntimeError, match="targets"):
            f(x, torch.tensor([0, 1, bad, 1]))

    @pytest.mark.parametrize("fn", ["sigmoid", "softmax", "softmax_smoothing", "star"])
    def test_compile_fullgraph_matches_eager(self, fn):
        _reset_dynamo()
        calls = {
            "sigmoid": lambda x, y: ft.sigmoid_focal_loss(x, y, alpha=[0.2, 0.5, 0.7, 0.4],
                                                          ignore_index=-1),
            "softmax": lambda x, y: ft.softmax_focal_loss(x, y.argmax(1), gamma=0.5,
                                                          weight=[1.0, 2.0, 1.0, 3.0]),
            "softmax_smoothing": lambda x, y: ft.softmax_focal_loss(
                x, y.argmax(1), label_smoothing=0.1),
            "star": lambda x, y: ft.sigmoid_focal_loss_star(x, y, beta=1.0),
        }
        f = calls[fn]
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        for n in (6, 9):  # a second batch size
            x = torch.randn(n, 4, requires_grad=True)
            y = (torch.rand(n, 4) < 0.4).float()
            out = compiled(x, y)
            (g,) = torch.autograd.grad(out, x)
            (g_eager,) = torch.autograd.grad(f(x, y), x)
            _assert_close(out, f(x, y), rtol=1e-6)
            _assert_close(g, g_eager, rtol=1e-6)



class TestTorchFunc:
    """torch.func transforms (grad, vmap of grad for per-sample gradients, jacrev, vjp):
    the closed-form gradient, the reference's numbers, value checks over the whole batch,
    a clear error for the nestings the closed form cannot serve."""

    def _data(self, n=6, c=5, seed=31):
        x = _logits((n, c), seed=seed)
        x[0, 1] = 1e4  # (saturated: the closed form stays exact there)
        y = torch.randint(0, c, (n,), generator=_gen(seed + 1))
        t = (torch.rand((n, c), generator=_gen(seed + 2)) < 0.3).double()
        return x, y, t

    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
    def test_grad_jacrev_and_vjp_give_the_reference_gradient(self, gamma):
        x, y, t = self._data()
        for fn, tg, name in ((ft.softmax_focal_loss, y, "softmax_focal_loss"),
                             (ft.sigmoid_focal_loss, t, "sigmoid_focal_loss")):
            want, want_g = _reference_grad(getattr(ref, name + "_and_grad"), x, tg,
                                           gamma=gamma)
            g, value = torch.func.grad_and_value(lambda a: fn(a, tg, gamma=gamma))(x)
            _assert_close(value, torch.tensor(want))
            _assert_close(g, torch.from_numpy(want_g), atol=1e-300)
            _assert_close(torch.func.jacrev(lambda a: fn(a, tg, gamma=gamma))(x),
                          torch.from_numpy(want_g), atol=1e-300)
            _, vjp = torch.func.vjp(lambda a: fn(a, tg, gamma=gamma), x)
            _assert_close(vjp(torch.tensor(3.0, dtype=torch.float64))[0],
                          3.0 * torch.from_numpy(want_g), atol=1e-300)

    @pytest.mark.parametrize("fn, kind", [
        (ft.softmax_focal_loss, "index"), (ft.sigmoid_focal_loss, "hard"),
        (ft.sigmoid_focal_loss_star, "hard"), (ft.asymmetric_loss, "hard"),
        (ft.asymmetric_softmax_loss, "index"), (ft.quality_focal_loss, "soft"),
        (ft.varifocal_loss, "soft"), (ft.distribution_focal_loss, "bins")])
    def test_per_sample_gradients_by_vmap_of_grad_are_each_samples_gradient(self, fn, kind):
        x, y, t = self._data()
        tg = {"index": y, "hard": t, "soft": torch.rand(t.shape, generator=_gen(3),
                                                          dtype=torch.float64),
              "bins": torch.rand(x.shape[:1], generator=_gen(4), dtype=torch.float64) * 3}[kind]
        got = torch.func.vmap(torch.func.grad(fn))(x[:, None], tg[:, None])
        for i in range(x.shape[0]):
            xi = x[i:i + 1].clone().requires_grad_(True)
            (want,) = torch.autograd.grad(fn(xi, tg[i:i + 1]), xi)
            _assert_close(got[i], want, atol=1e-300)

    def test_vmap_of_the_loss_and_a_bad_target_in_the_batch(self):
        x, y, _ = self._data()
        got = torch.func.vmap(lambda a, b: ft.softmax_focal_loss(a, b, reduction="none"))(
            x[:, None], y[:, None])
        want = ref.softmax_focal_loss(x.numpy(), y.numpy(), reduction="none")
        _assert_close(got.reshape(-1), torch.from_numpy(want))
        # the whole batch's values are checked (a .item() of a batched tensor would fail)
        bad = y.clone()
        bad[2] = 7
        with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 4\]"):
            torch.func.vmap(torch.func.grad(ft.softmax_focal_loss))(x[:, None], bad[:, None])

    def test_targets_and_hyperparameter_tensors_get_autograds_gradient(self):
        x, _, t = self._data()
        q = torch.softmax(_logits((6, 5), seed=5), dim=1)
        got = torch.func.grad(lambda a, b: ft.softmax_focal_loss(a, b, gamma=2.0),
                              argnums=(0, 1))(x, q)
        xr, qr = x.clone().requires_grad_(True), q.clone().requires_grad_(True)
        want = torch.autograd.grad(ft.softmax_focal_loss(xr, qr, gamma=2.0), (xr, qr))
        for g, w in zip(got, want):
            _assert_close(g, w, atol=1e-300)
        alpha = torch.tensor(0.25, dtype=torch.float64)
        got_a = torch.func.grad(lambda a: ft.sigmoid_focal_loss(x, t, alpha=a))(alpha)
        ar = alpha.clone().requires_grad_(True)
        (want_a,) = torch.autograd.grad(ft.sigmoid_focal_loss(x, t, alpha=ar), ar)
        _assert_close(got_a, want_a)

    def test_a_gradient_of_a_gradient_and_forward_mode_are_refused(self):
        x, y, _ = self._data()

        def f(a):
            return ft.softmax_focal_loss(a, y, gamma=2.0)
        with pytest.raises(RuntimeError, match="differentiable once"):
            torch.func.jacrev(torch.func.jacrev(f))(x)
        with pytest.raises(RuntimeError, match="differentiable once"):
            torch.func.grad(lambda a: torch.func.grad(f)(a).sum())(x)
        with pytest.raises(RuntimeError, match="forward-mode"):
            torch.func.jacfwd(f)(x)

    def test_a_derivative_through_a_transforms_gradient_is_refused(self):
        # The closed-form gradient is saved, not differentiated: an outer autograd over
        # torch.func.grad, or a transform over autograd.grad(create_graph=True), would see
        # it as a constant (a silently missing second derivative, as CE has one)
        x, y, _ = self._data()
        xr = x.clone().requires_grad_(True)
        g = torch.func.grad(lambda a: ft.softmax_focal_loss(a, y))(xr)
        with pytest.raises(RuntimeError, match="differentiable once"):
            (g * g).sum().backward()

        def penalty(a):
            (ga,) = torch.autograd.grad(ft.softmax_focal_loss(a, y), a, create_graph=True)
            return (ga * ga).sum()
        with pytest.raises(RuntimeError, match="differentiable once"):
            torch.func.grad(penalty)(x)

    def test_a_loss_of_constants_inside_a_transform(self):
        # none of the loss's own inputs is wrapped: a term of a transformed objective
        x, y, _ = self._data()
        s = torch.tensor(2.0, dtype=torch.float64)
        got = torch.func.grad(lambda k: k * ft.softmax_focal_loss(x, y))(s)
        _assert_close(got, torch.tensor(ref.softmax_focal_loss(x.numpy(), y.numpy())))
        out = torch.func.vmap(lambda k: k * ft.softmax_focal_loss(x, y))(torch.arange(3.0))
        _assert_close(out, torch.arange(3.0) * ref.softmax_focal_loss(x.numpy(), y.numpy()))

    def test_large_inputs_run_op_by_op_inside_a_transform(self, monkeypatch):
        from focalx.backends import torch as bt
        monkeypatch.setitem(bt.fused._FUSED, "enabled", True)
        monkeypatch.setitem(bt.fused._FUSED, "background", False)
        monkeypatch.setitem(bt.fused._FUSED, "min_numel", 0)
        calls = bt.fused._FUSED["calls"]
        x, y, _ = self._data(n=4, c=300)
        got = torch.func.vmap(torch.func.grad(ft.softmax_focal_loss))(x[:, None], y[:, None])
        assert bt.fused._FUSED["calls"] == calls  # (no compiled kernel under vmap)
        want = np.stack([_reference_grad(ref.softmax_focal_loss_and_grad, x[i:i + 1],
                                         y[i:i + 1])[1] for i in range(4)])
        _assert_close(got, torch.from_numpy(want), atol=1e-300)

    def test_linear_loss_and_module_per_sample_gradients(self):
        h = _logits((6, 4), seed=7)
        w = _logits((7, 4), seed=8)
        b = _logits((7,), seed=9)
        y = torch.randint(0, 7, (6,), generator=_gen(10))
        y[2] = -100
        got = torch.func.grad(lambda *a: ft.linear_softmax_focal_loss(
            a[0], a[1], y, linear_bias=a[2], gamma=2.0), argnums=(0, 1, 2))(h, w, b)
        args = [a.clone().requires_grad_(True) for a in (h, w, b)]
        want = torch.autograd.grad(ft.linear_softmax_focal_loss(
            args[0], args[1], y, linear_bias=args[2], gamma=2.0), args)
        for g, v in zip(got, want):
            _assert_close(g, v, atol=1e-300)
        head = ft.LinearFocalLoss(4, 7, gamma=2.0, bias=True).double()
        params = {k: v.detach() for k, v in head.named_parameters()}
        y = y.clamp(min=0)
        per = torch.func.vmap(torch.func.grad(
            lambda p, hi, yi: torch.func.functional_call(head, p, (hi[None], yi[None]))),
            in_dims=(None, 0, 0))(params, h, y)
        for i in range(6):
            head.zero_grad()
            head(h[i:i + 1], y[i:i + 1]).backward()
            for k, v in head.named_parameters():
                _assert_close(per[k][i], v.grad, atol=1e-300)
        with pytest.raises(ValueError, match="linear_weight"):
            torch.func.grad(lambda a: ft.linear_softmax_focal_loss(a, w[:, :3], y))(h)


class TestModules:
    def test_focal_loss_signature_is_cross_entropy_plus_gamma_alpha(self):
        ce = inspect.signature(torch.nn.CrossEntropyLoss.__init__).parameters
        fl = inspect.signature(ft.FocalLoss.__init__).parameters
        assert list(fl)[:len(ce)] == list(ce)
        assert all(fl[k].default == ce[k].default for k in ce)
        assert [k for k in fl if k not in ce] == ["gamma", "alpha", "epsilon"]
        assert all(fl[k].kind is inspect.Parameter.KEYWORD_ONLY
                   for k in ("gamma", "alpha", "epsilon"))

    def test_sigmoid_focal_loss_signature_is_bce_with_logits_plus_gamma_alpha(self):
        bce = inspect.signature(torch.nn.BCEWithLogitsLoss.__init__).parameters
        sfl = inspect.signature(ft.SigmoidFocalLoss.__init__).parameters
        assert list(sfl)[:len(bce)] == list(bce)
        assert [k for k in sfl if k not in bce] == ["gamma", "alpha", "epsilon"]

    def test_weight_is_a_buffer_that_follows_the_module(self):
        m = ft.FocalLoss(weight=torch.tensor([1.0, 2.0, 3.0]), alpha=[0.5, 0.5, 1.0])
        assert set(m.state_dict()) == {"weight", "alpha"}
        m = m.double()
        assert m.weight.dtype == torch.float64
        x, y = _logits((4, 3), seed=28), torch.tensor([0, 1, 2, 0])
        _assert_close(m(x, y), ft.softmax_focal_loss(x, y, weight=[1.0, 2.0, 3.0],
                                                     alpha=[0.5, 0.5, 1.0]))

    def test_legacy_size_average_reduce(self):
        x, y = _logits((4, 3), seed=29), torch.tensor([0, 1, 2, 0])
        with pytest.warns(UserWarning):
            m = ft.FocalLoss(size_average=False, gamma=0)
        _assert_close(m(x, y), F.cross_entropy(x, y, reduction="sum"))

    def test_training_step_reduces_loss(self):
        torch.manual_seed(0)
        x = torch.randn(256, 4)
        y = (x[:, 0] + 0.5 * x[:, 1] > 1.0).long()  # imbalanced
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        crit = ft.FocalLoss(gamma=2.0, alpha=[0.25, 0.75])
        first = None
        for _ in range(50):
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        assert loss.item() < 0.5 * first


class TestDispatch:
    def test_top_level_dispatches_to_torch(self):
        x, t = _logits((3, 2), seed=30), torch.ones(3, 2, dtype=torch.float64)
        out = focalx.sigmoid_focal_loss(x, t)
        assert isinstance(out, torch.Tensor)
        _assert_close(out, ft.sigmoid_focal_loss(x, t), rtol=0)
        y = torch.tensor([0, 1, 1])
        # torch's class axis (1) is the default through the dispatcher too
        _assert_close(focalx.softmax_focal_loss(x, y), ft.softmax_focal_loss(x, y), rtol=0)

    def test_numpy_class_weights_are_accepted(self):
        x, y = _logits((3, 2), seed=31), torch.tensor([0, 1, 1])
        _assert_close(focalx.softmax_focal_loss(x, y, weight=np.array([1.0, 2.0])),
                      ft.softmax_focal_loss(x, y, weight=torch.tensor([1.0, 2.0])), rtol=0)

    def test_compiled_fullgraph_matches_the_backend(self):
        _reset_dynamo()
        x, y, t = torch.randn(6, 4), (torch.rand(6, 4) < 0.4).float(), torch.tensor([0, 1, 3, 2, 0, 1])

        def top(a, b, c):
            return focalx.sigmoid_focal_loss(a, b) + focalx.softmax_focal_loss(a, c)

        def direct(a, b, c):
            return ft.sigmoid_focal_loss(a, b) + ft.softmax_focal_loss(a, c)
        got = torch.compile(top, fullgraph=True, backend="aot_eager")(x, y, t)
        want = torch.compile(direct, fullgraph=True, backend="aot_eager")(x, y, t)
        assert torch.equal(got, want)

    @pytest.mark.parametrize("imports, first_call", [
        ("import torch, focalx", "compiled"), ("import focalx, torch", "compiled"),
        ("import focalx, torch", "eager"), ("import focalx.torch as _ft, torch, focalx", "compiled")])
    def test_compiled_fullgraph_in_a_fresh_process(self, imports, first_call):
        # The first dispatch may come inside the compiled function, before the adapter
        # is loaded; no other framework is imported.
        code = imports + "\nimport sys\n" + (
            "x, y = torch.randn(6, 4), (torch.rand(6, 4) < 0.4).float()\n"
            + ("focalx.sigmoid_focal_loss(x, y)\n" if first_call == "eager" else "")
            + "f = torch.compile(lambda a, b: focalx.sigmoid_focal_loss(a, b), fullgraph=True,"
              " backend='aot_eager')\n"
              "import focalx.torch as ft\n"
              "assert torch.equal(f(x, y), ft.sigmoid_focal_loss(x, y))\n"
              "print(sorted(m for m in ('jax', 'tensorflow', 'keras', 'paddle')"
              " if m in sys.modules))\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == "[]"

    def test_mixed_frameworks_raise(self):
        x = _logits((3, 2), seed=32)
        with pytest.raises(TypeError, match="targets"):
            focalx.sigmoid_focal_loss(x, np.ones((3, 2)))
        with pytest.raises(TypeError, match="logits"):
            focalx.sigmoid_focal_loss(np.ones((3, 2)), torch.ones(3, 2))


def test_eager_calls_while_another_thread_compiles():
    """torch.compiler.is_compiling() is process-wide (torch 2.13): True in every thread
    while any thread compiles. An eager call meanwhile still reads its values (the
    precise ValueError) and still takes the fused kernel."""
    import focalx.backends.torch as bt
    entered, release = threading.Event(), threading.Event()

    def backend(gm, example_inputs):  # called while the compilation holds the flag
        entered.set()
        release.wait(120)
        return gm.forward

    compiler = threading.Thread(
        target=lambda: torch.compile(lambda a: a * 3 + 1, backend=backend)(torch.ones(2)))
    compiler.start()
    try:
        assert entered.wait(120)
        with pytest.raises(ValueError, match="targets"):
            ft.softmax_focal_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
        assert bt.fused._fusable(torch.empty(bt.fused._FUSED["min_numel"])) == bt.fused._FUSED["enabled"]
    finally:
        release.set()
        compiler.join(120)


@pytest.mark.parametrize("kw", [dict(gamma=0.5), dict(label_smoothing=0.1), {}])
def test_compiled_call_matches_eager_and_still_validates_hyperparameters(kw):
    """Data checks are left out while compiling (no host sync); hyperparameter checks stay."""
    f = torch.compile(lambda x, y: ft.softmax_focal_loss(x, y, **kw), fullgraph=True,
                      backend="aot_eager")
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    _assert_close(f(x, y), ft.softmax_focal_loss(x, y, **kw), rtol=1e-6)
    with pytest.raises(Exception, match="gamma"):
        torch.compile(lambda x, y: ft.softmax_focal_loss(x, y, gamma=-1.0),
                      backend="aot_eager")(x, y)


def test_grid_of_options_runs_on_every_device():
    for device, (fn, kw) in itertools.product(
            ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
            [(ft.sigmoid_focal_loss, dict(alpha=[0.1, 0.9], pos_weight=[2.0, 1.0])),
             (ft.softmax_focal_loss, dict(weight=[1.0, 2.0], alpha=[0.5, 1.0]))]):
        x = torch.randn(3, 2, device=device, requires_grad=True)
        y = torch.tensor([0, 1, 1], device=device)
        if fn is ft.sigmoid_focal_loss:
            y = torch.nn.functional.one_hot(y, 2).float()
        loss = fn(x, y, **kw)
        loss.backward()
        assert math.isfinite(loss.item()) and x.grad.device == x.device


class TestOffTheHost:
    """Tensors whose values cannot be read without a device sync: no call reads one, and
    nothing is made on the CPU and mixed in. The meta device (shapes only: reading a
    value or meeting a CPU tensor raises) stands in for a GPU here; on CUDA, torch's
    sync debug mode makes any host sync an error."""

    CALLS = [
        (ft.sigmoid_focal_loss, "t", dict(gamma=0.5, label_smoothing=0.1, ignore_index=-1)),
        (ft.sigmoid_focal_loss, "t", dict(alpha="vec", pos_weight="vec", reduction="sum",
                                          normalizer="num")),
        (ft.sigmoid_focal_loss, "t", dict(from_logits=False)),
        (ft.sigmoid_focal_loss_star, "t", dict(gamma=2.0, beta=1.0)),
        (ft.softmax_focal_loss, "y", dict(weight="vec", alpha="vec", label_smoothing=0.1)),
        (ft.softmax_focal_loss, "y", dict(gamma=1.5, ignore_index=1, reduction="none")),
        (ft.softmax_focal_loss, "t", dict(gamma=2.0)),  # probability targets
        # host data: numbers, lists, NumPy arrays (copied to the device once, then reused)
        (ft.sigmoid_focal_loss, "t", dict(alpha="list", pos_weight=2.0, weight=0.5,
                                          normalizer=4.0)),
        (ft.softmax_focal_loss, "y", dict(alpha="numpy", weight="list", normalizer=3.0)),
    ]

    @staticmethod
    def _args(device, kind, kw, shape=(64, 5)):
        x = torch.randn(shape, device=device)
        if kw.get("from_logits") is False:  # probabilities
            x = torch.rand(shape, device=device) * 0.98 + 0.01
        x.requires_grad_(True)
        if kind == "y":
            targets = torch.randint(0, shape[1], shape[:1], device=device)
        else:
            targets = torch.rand(shape, device=device)
        host = np.linspace(0.2, 0.8, shape[1])
        params = {k: (torch.linspace(0.2, 0.8, shape[1], device=device) if v == "vec" else
                      torch.tensor(4.0, device=device) if v == "num" else
                      host.tolist() if v == "list" else host if v == "numpy" else v)
                  for k, v in kw.items()}
        return x, targets, params

    def test_host_values_are_copied_to_the_device_once(self, monkeypatch):
        from focalx.backends import torch as b
        from focalx.backends._kept import KeptCopies
        monkeypatch.setattr(b.ops, "_KEPT", KeptCopies())
        meta = torch.empty(3, device="meta")
        first = b.ops._to_device(torch.tensor([0.1, 0.2, 0.3]), meta)
        assert b.ops._to_device(torch.tensor([0.1, 0.2, 0.3]), meta) is first
        assert first.device.type == "meta" and first.dtype == meta.dtype
        assert b.ops._to_device(torch.tensor([0.1, 0.2, 0.4]), meta) is not first
        assert b.ops._to_device(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), meta) \
            is not first
        assert len(b.ops._KEPT) == 3
        # strided and expanded vectors (a column of a table, a broadcast number)
        for v in (torch.arange(10.0)[::2], torch.tensor(0.25).expand(5),
                  torch.arange(12.0).reshape(3, 4)[:, 1]):
            assert b.ops._to_device(v, meta).shape == v.shape
        assert len(b.ops._KEPT) == 6
        # a single value is a fill on the device: nothing to keep
        one = b.ops._to_device(torch.tensor(2.0), meta)
        assert one.shape == () and one.device.type == "meta" and len(b.ops._KEPT) == 6
        # through the losses: each host vector once, however many calls
        fn, kind, kw = self.CALLS[-2]  # alpha a list; pos_weight, weight, normalizer numbers
        for _ in range(3):
            x, targets, params = self._args("meta", kind, kw)
            fn(x, targets, **params).backward()
        assert len(b.ops._KEPT) == 7
        x = torch.randn(4, 5, device="meta", requires_grad=True)
        ft.softmax_focal_loss(x, torch.zeros(4, dtype=torch.long, device="meta"),
                              weight=np.arange(10.0)[::2]).backward()
        assert len(b.ops._KEPT) == 8
        # on the CPU nothing is kept
        b.ops._to_device(torch.tensor([0.5, 0.6]), torch.empty(3))
        assert len(b.ops._KEPT) == 8

    def test_the_kept_copies_are_bounded_and_never_dropped(self, monkeypatch):
        # (a kernel queued on another stream, or a captured CUDA graph, may read one)
        from focalx.backends import torch as b
        from focalx.backends._kept import KeptCopies
        monkeypatch.setattr(b.ops, "_KEPT", KeptCopies(limit=4))
        meta = torch.empty(3, device="meta")
        kept = [b.ops._to_device(torch.tensor([0.0, float(i)]), meta) for i in range(4)]
        more = b.ops._to_device(torch.tensor([0.0, 9.0]), meta)
        assert more.device.type == "meta" and len(b.ops._KEPT) == 4
        assert b.ops._to_device(torch.tensor([0.0, 9.0]), meta) is not more
        assert all(b.ops._to_device(torch.tensor([0.0, float(i)]), meta) is k
                   for i, k in enumerate(kept))

    def test_kernel_arguments_off_the_cpu_are_device_tensors_checked_on_the_host(self):
        from focalx.backends import torch as b
        x = torch.empty(8, 4, device="meta")
        out = b.fused._device_params(dict(alpha=[0.1, 0.2, 0.3, 0.4], pos_weight=np.float64(2.0),
                                    weight=0.5, normalizer=4.0, gamma=2.0), x)
        for name in ("alpha", "pos_weight", "weight"):
            assert out[name].device.type == "meta" and out[name].dtype == x.dtype
        assert out["normalizer"] == 4.0 and out["gamma"] == 2.0
        assert b.fused._device_params(dict(alpha=0.25), x)["alpha"] == 0.25  # a number: a constant
        with pytest.raises(ValueError, match="alpha"):
            b.fused._device_params(dict(alpha=[0.1, 1.5, 0.3, 0.4]), x)
        with pytest.raises(ValueError, match="pos_weight"):
            b.fused._device_params(dict(pos_weight=[-1.0]), x)
        with pytest.raises(TypeError, match="weight"):
            b.fused._device_params(dict(weight="heavy"), x)

    def test_the_meta_device_stands_in_for_a_gpu(self):
        with pytest.raises(Exception):
            torch.zeros(2, device="meta").sum().item()
        with pytest.raises(Exception):
            torch.zeros(2, device="meta") + torch.zeros(2)

    @pytest.mark.parametrize("fn,kind,kw", CALLS)
    def test_runs_on_the_meta_device_without_reading_a_value(self, fn, kind, kw):
        x, targets, params = self._args("meta", kind, kw)
        loss = fn(x, targets, **params)
        loss.sum().backward()
        assert loss.device.type == "meta" and x.grad.device.type == "meta"
        assert x.grad.shape == x.shape

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    @pytest.mark.parametrize("fn,kind,kw", CALLS)
    @pytest.mark.parametrize("shape", [(64, 5), (4096, 32)])  # op by op; the fused kernel
    def test_cuda_calls_make_no_host_sync(self, fn, kind, kw, shape):
        x, targets, params = self._args("cuda", kind, kw, shape)
        fn(x, targets, **params).sum().backward()  # compiles the kernel outside the check
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss = fn(x, targets, **params)
            loss.sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()


class TestFusedKernel:
    """Large eager calls run the spec as one torch.compile'd kernel (backends/torch/fused.py)."""

    @pytest.fixture(autouse=True)
    def _fused(self, monkeypatch):
        from focalx.backends import torch as bt
        monkeypatch.setitem(bt.fused._FUSED, "enabled", True)
        # (compiled in the calling thread: a kernel serves the call that compiles it)
        monkeypatch.setitem(bt.fused._FUSED, "background", False)
        self.bt = bt

    def _big(self, seed=0, shape=(256, 1024)):  # 2**18 elements: above the threshold
        x = _logits(shape, seed=seed, dtype=torch.float32)
        t = (torch.rand(shape, generator=_gen(seed + 1)) < 0.1).float()
        y = torch.randint(0, shape[1], shape[:1], generator=_gen(seed + 2))
        return x, t, y

    def _loss_and_grad(self, fn, x, *args, **kw):
        before = self.bt.fused._FUSED["calls"]
        x = x.detach().requires_grad_(True)
        loss = fn(x, *args, **kw)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        assert self.bt.fused._FUSED["calls"] == before + 1, "the fused kernel was not used"
        return loss, grad

    @pytest.mark.parametrize("fn,kw", [
        (ft.sigmoid_focal_loss, dict(alpha=np.linspace(0.1, 0.9, 1024).tolist(),
                                     pos_weight=2.0, weight=0.5, normalizer=300.0)),
        (ft.softmax_focal_loss, dict(alpha=np.linspace(0.1, 0.9, 1024), weight=[2.0] * 1024,
                                     label_smoothing=0.1)),
        (ft.sigmoid_focal_loss_star, dict(alpha=[0.3] * 1024, weight=torch.tensor(0.5))),
    ])
    def test_host_hyperparameters_as_device_tensors_give_the_same_numbers(
            self, monkeypatch, fn, kw):
        # Off the CPU the kernel takes host-data hyperparameters as tensors on the device
        # (_device_params): the same numbers as the reference, run here on the CPU.
        monkeypatch.setattr(self.bt.ops, "_off_host", lambda x: True)
        converted = []
        device_params = self.bt.fused._device_params

        def spy(args, x):
            out = device_params(args, x)
            converted.append(sorted(k for k, v in out.items() if isinstance(v, torch.Tensor)))
            return out
        monkeypatch.setattr(self.bt.fused, "_device_params", spy)
        x, t, y = self._big(5)
        t = y if fn is ft.softmax_focal_loss else t
        loss, grad = self._loss_and_grad(fn, x, t, **kw)
        assert converted == [sorted(k for k in kw if k in ("alpha", "pos_weight", "weight"))]
        ref_kw = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        want, want_g = _reference_grad(getattr(ref, fn.__name__ + "_and_grad"), x, t, **ref_kw,
                                       **({"axis": 1} if fn is ft.softmax_focal_loss else {}))
        _assert_close(loss, torch.tensor(want), rtol=2e-6)
        _assert_close(grad, torch.from_numpy(want_g), rtol=2e-5, atol=1e-12)
        # a bad argument raises the spec's first error, as on the CPU
        with pytest.raises(ValueError, match="gamma"):
            fn(x, t, **dict(kw, gamma=-1.0, alpha=[2.0] * 1024))

    @pytest.mark.parametrize("fn,kw", [
        (ft.sigmoid_focal_loss, dict(gamma=0.5, alpha=0.25)),
        (ft.softmax_focal_loss, dict(gamma=2.0, ignore_index=3)),
        (ft.sigmoid_focal_loss_star, dict(gamma=2.0, beta=1.0)),
    ])
    def test_matches_the_reference_loss_and_gradient(self, fn, kw):
        x, t, y = self._big(1)
        if fn is ft.softmax_focal_loss:
            t = y
            y[:10] = 3
        loss, grad = self._loss_and_grad(fn, x, t, **kw)
        want, want_g = _reference_grad(getattr(ref, fn.__name__ + "_and_grad"), x, t, **kw,
                                       **({"axis": 1} if fn is ft.softmax_focal_loss else {}))
        _assert_close(loss, torch.tensor(want), rtol=2e-6)
        _assert_close(grad, torch.from_numpy(want_g), rtol=2e-5, atol=1e-12)

    def test_bad_values_raise_the_same_value_error(self):
        x, t, y = self._big(2)
        with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\], got values in "
                                             r"\[0.0, 2.0\]"):
            ft.sigmoid_focal_loss(x, t * 2)
        for bad in (y + 1024, y - 5):  # an out-of-range gather must not abort the process
            with pytest.raises(ValueError, match="targets must be class indices"):
                ft.softmax_focal_loss(x, bad)
        with pytest.raises(ValueError, match="gamma"):
            ft.sigmoid_focal_loss(x, t, gamma=-1.0)
        assert self.bt.fused._FUSED["enabled"], "a user error must not switch the fused path off"

    def test_every_extreme_golden_case_in_float32_and_float64(self, monkeypatch):
        from focalx.conformance import _harness, runner
        monkeypatch.setitem(self.bt.fused._FUSED, "min_numel", 0)
        harness = _harness.create("torch")
        cases = [c for c in runner.load_golden()["cases"]
                 if "extreme/gamma=0.25" in c["id"] or "extreme/gamma=2.0" in c["id"]]
        assert len(cases) == 12
        before = self.bt.fused._FUSED["calls"]
        failures = []
        for dtype in ("float32", "float64"):
            for r in runner.run_cases(harness, cases, "cpu", dtype):
                if r["status"] != "passed":
                    failures.append(f"{dtype} {r['id']}: {r.get('detail')}")
        assert not failures, "\n".join(failures)
        assert self.bt.fused._FUSED["calls"] >= before + 24

    def test_one_golden_case_of_every_family_in_float32(self, monkeypatch):
        from focalx.conformance import _harness, runner
        monkeypatch.setitem(self.bt.fused._FUSED, "min_numel", 0)
        harness = _harness.create("torch")
        families = {}
        for c in runner.load_golden()["cases"]:
            if "run_" + c["fn"] in _spec_plain_runs() or c["fn"] == "linear_softmax_focal_loss":
                # (the losses the kernel does not run: _spec.PLAIN_RUNS, and the linear
                # loss, whose blocks run op by op on its own autograd node)
                continue
            families.setdefault("/".join(c["id"].split("/")[:2]), c)
        assert len(families) >= 40
        before = self.bt.fused._FUSED["calls"]
        results = runner.run_cases(harness, list(families.values()), "cpu", "float32")
        failures = [f"{r['id']}: {r.get('detail')}" for r in results if r["status"] != "passed"]
        assert not failures, "\n".join(failures)
        assert self.bt.fused._FUSED["calls"] >= before + len(families) - 3  # empty ones may not

    def test_softmax_with_tied_maximal_logits_and_a_scaled_upstream_gradient(
            self, monkeypatch):
        # The kernel's log-softmax counts tied maxima itself (as float): ties of 2 and of
        # every class, next to rows with one dominant class; and a backward seeded with
        # 3 (not 1) scales the saved gradient instead of returning it as it is.
        monkeypatch.setitem(self.bt.fused._FUSED, "min_numel", 0)
        rows = [[3.0, 3.0, 0.0, -1.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, -1e4, -1e4],
                [40.0, 0.0, 0.0, 0.0], [1.0, 2.0, 2.0, 2.0]]
        x = torch.tensor(rows, dtype=torch.float64)
        y = torch.tensor([0, 3, 1, 0, 0])
        want, want_g = ref.softmax_focal_loss_and_grad(x.numpy(), y.numpy(), gamma=2.0)
        loss, grad = self._loss_and_grad(ft.softmax_focal_loss, x, y, gamma=2.0)
        _assert_close(loss, torch.tensor(want), rtol=1e-13)
        _assert_close(grad, torch.tensor(want_g), rtol=1e-13, atol=1e-16)
        xg = x.clone().requires_grad_(True)
        (ft.softmax_focal_loss(xg, y, gamma=2.0) * 3.0).backward()
        _assert_close(xg.grad, 3.0 * torch.tensor(want_g), rtol=1e-13, atol=1e-16)
        # the count is in the logits' dtype, whatever torch's default dtype is: 1001 tied
        # classes in float32 under a bfloat16 default (where 1001 rounds to 1000)
        x32 = torch.zeros((2, 1001), dtype=torch.float32)
        want32 = ref.softmax_focal_loss(x32.double().numpy(), np.array([0, 5]), gamma=2.0)
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            got = ft.softmax_focal_loss(x32, torch.tensor([0, 5]), gamma=2.0)
        finally:
            torch.set_default_dtype(old)
        assert got.dtype == torch.float32
        _assert_close(got.double(), torch.tensor(want32), rtol=1e-6)

    def test_half_precision_input_is_computed_in_float32(self):
        x, t, _ = self._big(3)
        loss, grad = self._loss_and_grad(ft.sigmoid_focal_loss, x.half(), t.half())
        assert loss.dtype == torch.float16 and grad.dtype == torch.float16
        want = ref.sigmoid_focal_loss(x.half().double().numpy(), t.numpy())
        _assert_close(loss.double(), torch.tensor(want), rtol=2e-3)

    def test_a_compiler_failure_falls_back_with_one_warning(self, monkeypatch):
        class BackendCompilerFailed(RuntimeError):  # what torch raises without a compiler
            pass

        def broken_compile(fn, **kwargs):
            def kernel(*args):
                raise BackendCompilerFailed("no C++ compiler")
            return kernel
        monkeypatch.setitem(self.bt.fused._FUSED, "compile", broken_compile)
        monkeypatch.setattr(self.bt.fused, "_KERNELS", {})
        x, t, _ = self._big(4)
        with pytest.warns(RuntimeWarning, match="cannot compile here"):
            loss = ft.sigmoid_focal_loss(x, t)
        _assert_close(loss, torch.tensor(ref.sigmoid_focal_loss(x.numpy(), t.numpy())),
                      rtol=2e-6)
        assert not self.bt.fused._FUSED["enabled"]

    def test_small_inputs_and_the_off_switch_stay_eager(self, monkeypatch):
        x, t, _ = self._big(5, shape=(4, 8))
        before = self.bt.fused._FUSED["calls"]
        ft.sigmoid_focal_loss(x, t)
        monkeypatch.setitem(self.bt.fused._FUSED, "enabled", False)
        ft.sigmoid_focal_loss(*self._big(6)[:2])
        assert self.bt.fused._FUSED["calls"] == before

    def test_kernel_log_softmax_and_expm1_are_exact_where_the_compiler_is_not(self):
        from focalx._numpy import NumpyOps
        ops = self.bt.fused._RecordingOps()
        x = torch.tensor([[30., 0., -17., 15.], [1e4, -1e4, 0., 88.], [3., 3., 1., 3.],
                          [0., 0., 0., 0.]], dtype=torch.float64)
        lsm = torch.compile(lambda a: ops.log_softmax(a, 1), fullgraph=True)
        np.testing.assert_allclose(lsm(x).numpy(), NumpyOps.log_softmax(x.numpy(), 1),
                                   rtol=1e-15, atol=0)
        v = torch.cat([-torch.logspace(-30, 2, 200, dtype=torch.float64),
                       torch.logspace(-30, 1.9, 200, dtype=torch.float64)])  # e^80 < f32 max
        em1 = torch.compile(lambda a: ops.expm1(a), fullgraph=True)
        for dtype, ulps in ((torch.float64, 2), (torch.float32, 2)):
            got = em1(v.to(dtype)).double()
            want = torch.expm1(v.to(dtype).double())
            rel = ((got - want).abs() / want.abs()).max().item()
            assert rel <= ulps * torch.finfo(dtype).eps, (dtype, rel)

    def test_kernel_softmax_keeps_relative_precision_down_to_small_probabilities(self):
        # the spec's softmax from the kernel's log-softmax is that log-softmax's own exp
        # over its sum, so p down to 1e-35 keeps float32's relative precision (the
        # kernel's Ops give softmax_parts): exp of log p would turn the
        # rounding of log p (near -80) into ~8 ulps of p. (Logits are multiples of 1/8,
        # so x - max is exact and the float64 softmax is the answer to within 1 ulp.)
        from focalx import _spec

        def softmax(a):
            ops = self.bt.fused._RecordingOps()
            return _spec._softmax(ops, ops.log_softmax(a, 1))
        x = torch.tensor([[0.0, -77.875, -40.125, -3.25, -78.625, -62.875, -0.5],
                          [7.0, 7.0, -71.25, -59.875, 0.375, -33.25, -72.875]])
        got = torch.compile(softmax, fullgraph=True)(x).double()
        want = torch.softmax(x.double(), 1)
        rel = ((got - want).abs() / want).max().item()
        assert rel <= 3 * torch.finfo(torch.float32).eps, rel

    def test_numpy_scalars_and_per_step_normalizers_use_one_kernel(self, monkeypatch):
        monkeypatch.setattr(self.bt.fused, "_KERNELS", {})
        x, t, _ = self._big(7)
        before = self.bt.fused._FUSED["calls"]
        for i, norm in enumerate([np.float64(5.0), 6, 7.5, np.array(9.0)]):
            loss = ft.sigmoid_focal_loss(x, t, gamma=np.float64(2.0), reduction="sum",
                                         normalizer=norm)
            want = ref.sigmoid_focal_loss(x.numpy(), t.numpy(), gamma=2.0, reduction="sum",
                                          normalizer=float(norm))
            _assert_close(loss, torch.tensor(want), rtol=2e-6)
        assert self.bt.fused._FUSED["calls"] == before + 4 and self.bt.fused._FUSED["enabled"]
        assert len(self.bt.fused._KERNELS) == 1
        with pytest.raises(ValueError, match="normalizer must be finite and > 0, got -1"):
            ft.sigmoid_focal_loss(x, t, normalizer=-1)

    def test_a_configuration_the_compiler_cannot_trace_runs_eagerly(self, monkeypatch):
        def untraceable(fn, **kwargs):
            def kernel(*args):
                raise NotImplementedError("Unsupported: something dynamo cannot trace")
            return kernel
        monkeypatch.setitem(self.bt.fused._FUSED, "compile", untraceable)
        monkeypatch.setattr(self.bt.fused, "_KERNELS", {})
        x, t, _ = self._big(8)
        for _ in range(2):
            _assert_close(ft.sigmoid_focal_loss(x, t),
                          torch.tensor(ref.sigmoid_focal_loss(x.numpy(), t.numpy())), rtol=2e-6)
        assert self.bt.fused._FUSED["enabled"]
        assert [k.eager for k in self.bt.fused._KERNELS.values()] == [True]

    def test_floats_that_the_branch_class_fixes_are_traced_once(self, monkeypatch):
        # gamma=2 and the defaults label_smoothing=0, epsilon=0 are constants of the
        # kernel's graph from the start (fused._pin): passed as symbolic floats, the
        # spec's equality branches specialized them and dynamo traced the kernel twice.
        from torch._dynamo.utils import counters
        monkeypatch.setitem(self.bt.fused._FUSED, "min_numel", 0)
        monkeypatch.setattr(self.bt.fused, "_KERNELS", {})
        x = _logits((16, 5), seed=9, dtype=torch.float32)
        t = (torch.rand((16, 5), generator=_gen(10)) < 0.3).float()
        traces = counters["aot_autograd"]["total"]
        loss, grad = self._loss_and_grad(ft.sigmoid_focal_loss, x, t, gamma=2.0)
        assert counters["aot_autograd"]["total"] == traces + 1
        want, want_g = _reference_grad(ref.sigmoid_focal_loss_and_grad, x, t, gamma=2.0)
        _assert_close(loss, torch.tensor(want), rtol=2e-6)
        _assert_close(grad, torch.from_numpy(want_g), rtol=2e-5, atol=1e-12)


class TestBackgroundCompilation:
    """By default a kernel compiles in a background thread while calls run op by op; the
    calling thread never waits for a compilation (backends/torch/fused.py, _call)."""

    @pytest.fixture(autouse=True)
    def _background(self, monkeypatch):
        from focalx.backends import torch as bt
        monkeypatch.setitem(bt.fused._FUSED, "enabled", True)
        monkeypatch.setitem(bt.fused._FUSED, "background", True)
        monkeypatch.setattr(bt.fused, "_KERNELS", {})
        self.bt = bt

    def _inputs(self, seed=0, shape=(128, 256)):
        x = _logits(shape, seed=seed, dtype=torch.float32)
        t = (torch.rand(shape, generator=_gen(seed + 1)) < 0.2).float()
        return x, t

    def _wait_ready(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kernels = list(self.bt.fused._KERNELS.values())
            if kernels and all(k.ready or k.eager for k in kernels) and \
                    not any(k.busy for k in kernels):
                return kernels
            time.sleep(0.05)
        raise AssertionError("the background compilation did not finish")

    def _held_compilation(self, monkeypatch):
        """(started, release): the compile thread's compilation (torch.compile's eager
        backend) signals `started` and then waits for `release`."""
        started, release = threading.Event(), threading.Event()

        def slow_compile(fn, **kwargs):
            compiled = torch.compile(fn, fullgraph=True, backend="eager")

            def kernel(*args):
                if threading.current_thread().name == "focalx-torch-compile":
                    started.set()
                    release.wait(120)
                return compiled(*args)
            return kernel
        monkeypatch.setitem(self.bt.fused._FUSED, "compile", slow_compile)
        return started, release

    def test_calls_run_op_by_op_while_the_kernel_compiles(self, monkeypatch):
        # A compilation held up in the compile thread: calls meanwhile run op by op,
        # without waiting for it; once it is done, they take the kernel.
        started, release = self._held_compilation(monkeypatch)
        x, t = self._inputs()
        want = torch.tensor(ref.sigmoid_focal_loss(x.double().numpy(), t.numpy(), gamma=0.5))
        before = self.bt.fused._FUSED["calls"]
        try:
            _assert_close(ft.sigmoid_focal_loss(x, t, gamma=0.5), want, rtol=2e-6)
            assert started.wait(120)
            for _ in range(3):
                _assert_close(ft.sigmoid_focal_loss(x, t, gamma=0.5), want, rtol=2e-6)
            # (had a call waited for the compilation, it would still be waiting)
            assert [k.busy for k in self.bt.fused._KERNELS.values()] == [True]
            assert self.bt.fused._FUSED["calls"] == before
        finally:
            release.set()
        self._wait_ready()
        _assert_close(ft.sigmoid_focal_loss(x, t, gamma=0.5), want, rtol=2e-6)
        assert self.bt.fused._FUSED["calls"] == before + 1

    def test_wait_for_kernels_returns_once_the_queued_kernel_is_compiled(self, monkeypatch):
        started, release = self._held_compilation(monkeypatch)
        x, t = self._inputs(5)
        try:
            ft.sigmoid_focal_loss(x, t, gamma=1.5)
            assert started.wait(120)
            assert ft.wait_for_kernels(timeout=0.2) is False  # (still compiling)
        finally:
            release.set()
        assert ft.wait_for_kernels(timeout=300) is True
        (kernel,) = self.bt.fused._KERNELS.values()
        assert kernel.ready and not kernel.busy
        before = self.bt.fused._FUSED["calls"]
        ft.sigmoid_focal_loss(x, t, gamma=1.5)
        assert self.bt.fused._FUSED["calls"] == before + 1

    def test_the_compile_thread_ends_when_idle_and_restores_the_switch_interval(self):
        # An idle compile thread would keep its OpenMP team, which slows every parallel
        # op of the caller (libgomp stops spinning with more threads than cores); and the
        # short switch interval of a compilation must not outlive it.
        interval = sys.getswitchinterval()
        x, t = self._inputs(6)
        ft.sigmoid_focal_loss(x, t, gamma=2.5)
        assert ft.wait_for_kernels(timeout=300)
        deadline = time.monotonic() + 60
        while self.bt.fused._WORKER["thread"] is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.bt.fused._WORKER["thread"] is None
        assert not any(th.name == "focalx-torch-compile" and th.is_alive()
                       for th in threading.enumerate())
        assert sys.getswitchinterval() == interval
        before = self.bt.fused._FUSED["calls"]
        ft.sigmoid_focal_loss(x, t, gamma=2.5)  # (the kernel compiled by the ended thread)
        assert self.bt.fused._FUSED["calls"] == before + 1

    @pytest.mark.parametrize("timeout", [-1, "1", True, float("nan")])
    def test_wait_for_kernels_rejects_a_bad_timeout(self, timeout):
        with pytest.raises(ValueError, match="timeout"):
            ft.wait_for_kernels(timeout=timeout)

    def test_one_compilation_serves_every_hyperparameter_value(self):
        # gamma, alpha and label_smoothing are run-time inputs of the kernel: a new value
        # of the same branch class (here a fractional gamma, a smoothing > 0) neither
        # compiles nor runs op by op, and gives the reference's numbers.
        x, t = self._inputs(3)
        ft.sigmoid_focal_loss(x.clone().requires_grad_(True), t, gamma=0.5, alpha=0.25,
                              label_smoothing=0.1)
        (kernel,) = self._wait_ready()
        cache = torch._C._dynamo.eval_frame._debug_get_cache_entry_list
        entries = len(cache(kernel.fn.__code__))
        for i in range(12):
            kw = dict(gamma=0.3 + 0.37 * i, alpha=0.05 + 0.07 * i, label_smoothing=0.01 * (i + 1))
            if kw["gamma"] == int(kw["gamma"]):
                continue
            before = self.bt.fused._FUSED["calls"]
            xg = x.clone().requires_grad_(True)
            loss = ft.sigmoid_focal_loss(xg, t, **kw)
            (grad,) = torch.autograd.grad(loss, xg)
            assert self.bt.fused._FUSED["calls"] == before + 1, kw
            want, want_g = ref.sigmoid_focal_loss_and_grad(x.double().numpy(), t.numpy(), **kw)
            _assert_close(loss, torch.tensor(want), rtol=2e-6)
            _assert_close(grad, torch.from_numpy(want_g), rtol=2e-5, atol=1e-12)
        assert len(self.bt.fused._KERNELS) == 1 and not kernel.busy
        assert len(cache(kernel.fn.__code__)) == entries
        # another batch size: the same compilation (sizes are dynamic)
        x2, t2 = self._inputs(4, shape=(96, 256))
        before = self.bt.fused._FUSED["calls"]
        ft.sigmoid_focal_loss(x2.requires_grad_(True), t2, gamma=0.9, alpha=0.5,
                              label_smoothing=0.05)
        assert self.bt.fused._FUSED["calls"] == before + 1

    @pytest.mark.parametrize("fn,kw,kw2", [
        (ft.softmax_focal_loss, dict(gamma=1.5, alpha=[0.3] * 64, label_smoothing=0.1),
         dict(gamma=2.5, alpha=[0.6] * 64, label_smoothing=0.2)),
        (ft.softmax_focal_loss, dict(gamma=2.0, alpha=0.3), dict(gamma=2.0, alpha=0.7)),
        (ft.sigmoid_focal_loss_star, dict(gamma=2.0, beta=1.0), dict(gamma=3.5, beta=-0.5)),
        (ft.sigmoid_focal_loss, dict(gamma=3.0, pos_weight=2.0, normalizer=7.0),
         dict(gamma=3.0, pos_weight=0.5, normalizer=3.0)),
        # Poly-1's epsilon and ASL's exponents and margin are run-time floats too
        (ft.sigmoid_focal_loss, dict(gamma=2.0, epsilon=1.0), dict(gamma=2.0, epsilon=-0.75)),
        (ft.softmax_focal_loss, dict(gamma=2.0, epsilon=2.0), dict(gamma=2.0, epsilon=-1.0)),
        (ft.asymmetric_loss, dict(gamma_pos=1.0, gamma_neg=4.0, clip=0.05),
         dict(gamma_pos=1.0, gamma_neg=4.0, clip=0.2)),
        (ft.asymmetric_loss, dict(gamma_pos=0.5, gamma_neg=2.5, clip=0.05),
         dict(gamma_pos=0.25, gamma_neg=3.5, clip=0.1)),
        (ft.asymmetric_softmax_loss, dict(gamma_pos=0.5, gamma_neg=1.5, label_smoothing=0.1),
         dict(gamma_pos=0.75, gamma_neg=2.5, label_smoothing=0.2)),
    ])
    def test_new_values_of_every_loss_reuse_the_kernel(self, fn, kw, kw2):
        x, t = self._inputs(5, shape=(512, 64))
        if fn in (ft.softmax_focal_loss, ft.asymmetric_softmax_loss):
            t = torch.randint(0, 64, (512,), generator=_gen(6))
        fn(x, t, **kw)
        self._wait_ready()
        n = len(self.bt.fused._KERNELS)
        before = self.bt.fused._FUSED["calls"]
        loss = fn(x, t, **kw2)
        assert self.bt.fused._FUSED["calls"] == before + 1 and len(self.bt.fused._KERNELS) == n, \
            "a new hyperparameter value needed a new kernel"
        extra = {"axis": 1} if fn in (ft.softmax_focal_loss, ft.asymmetric_softmax_loss) else {}
        want = getattr(ref, fn.__name__)(x.double().numpy(), t.numpy(), **kw2, **extra)
        _assert_close(loss, torch.tensor(want), rtol=2e-6)

    def test_inference_mode_and_autocast_calls_get_their_kernel(self):
        # the compile thread compiles in the calling thread's state (dynamo's guards
        # read inference mode, autocast and the thread count)
        x, t = self._inputs(7)
        for ctx in (torch.inference_mode, lambda: torch.autocast("cpu", dtype=torch.bfloat16)):
            with ctx():
                ft.sigmoid_focal_loss(x, t)
            self._wait_ready()
            before = self.bt.fused._FUSED["calls"]
            with ctx():
                ft.sigmoid_focal_loss(x, t)
            assert self.bt.fused._FUSED["calls"] == before + 1

    def test_dynamo_reset_drops_the_kernel_and_it_compiles_again(self):
        x, t = self._inputs(9)
        want = torch.tensor(ref.sigmoid_focal_loss(x.double().numpy(), t.numpy(), gamma=1.3))
        ft.sigmoid_focal_loss(x, t, gamma=1.3)
        self._wait_ready()
        _reset_dynamo()
        before = self.bt.fused._FUSED["calls"]
        _assert_close(ft.sigmoid_focal_loss(x, t, gamma=1.3), want, rtol=2e-6)  # op by op
        assert self.bt.fused._FUSED["calls"] == before
        self._wait_ready()
        _assert_close(ft.sigmoid_focal_loss(x, t, gamma=1.3), want, rtol=2e-6)
        assert self.bt.fused._FUSED["calls"] == before + 1

    def test_threads_calling_while_the_kernel_compiles(self):
        # calls from several threads, with their own gammas, before, during and after the
        # compilation: every result is the reference's
        x, t = self._inputs(10)
        gammas = (0.5, 1.5, 2.5, 3.5)
        wants = {g: ref.sigmoid_focal_loss(x.double().numpy(), t.numpy(), gamma=g) for g in gammas}
        errors = []

        def work(g):
            try:
                for _ in range(15):
                    got = ft.sigmoid_focal_loss(x, t, gamma=g).item()
                    if not math.isclose(got, wants[g], rel_tol=2e-6):
                        errors.append((g, got, wants[g]))
                    time.sleep(0.02)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        threads = [threading.Thread(target=work, args=(g,)) for g in gammas]
        for th in threads:
            th.start()
        for th in threads:
            th.join(300)
        assert not errors
        self._wait_ready()
        before = self.bt.fused._FUSED["calls"]
        work(2.5)
        assert not errors and self.bt.fused._FUSED["calls"] == before + 15

    def test_a_bad_argument_raises_and_compiles_nothing(self):
        x, t = self._inputs(8)
        with pytest.raises(ValueError, match="gamma"):
            ft.sigmoid_focal_loss(x, t, gamma=-1.0)
        with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
            ft.sigmoid_focal_loss(x, t * 3)
        assert not any(k.busy or k.tried for k in self.bt.fused._KERNELS.values())

    def test_a_fresh_process_compiles_only_in_the_compile_thread(self):
        # The first call returns (op by op) without compiling; torch.compile runs only in
        # the compile thread; 40 steps each with a new gamma, alpha and smoothing (of the
        # same branch classes) then use that one compilation.
        code = """if True:
            import threading, time, torch, numpy as np, focalx.torch as ft
            from focalx import _numpy as ref
            import focalx.backends.torch as bt
            from torch._inductor import compile_fx, config
            calls = []  # the threads that compiled a graph
            def backend(gm, inputs):
                calls.append(threading.current_thread().name)
                with config.patch(fx_graph_cache=False):
                    return compile_fx.compile_fx(gm, inputs)
            def compile_(fn, options=None, **kw):
                return torch.compile(fn, backend=backend, **kw)
            bt.fused._FUSED["compile"] = compile_
            g = torch.Generator().manual_seed(0)
            x = torch.randn(64, 300, generator=g); t = (torch.rand(64, 300, generator=g) < .2).float()
            def check(loss, **kw):
                want = ref.sigmoid_focal_loss(x.double().numpy(), t.numpy(), **kw)
                np.testing.assert_allclose(loss.item(), want, rtol=2e-6)
            check(ft.sigmoid_focal_loss(x, t, gamma=1.5, label_smoothing=0.05), gamma=1.5,
                  label_smoothing=0.05)
            assert bt.fused._FUSED["calls"] == 0
            deadline = time.monotonic() + 300
            while bt.fused._FUSED["calls"] == 0 and time.monotonic() < deadline:
                ft.sigmoid_focal_loss(x, t, gamma=1.5, label_smoothing=0.05)
                time.sleep(0.05)
            assert bt.fused._FUSED["calls"] > 0
            n = len(calls)
            for i in range(40):
                kw = dict(gamma=1.01 + 0.0731 * i, alpha=0.2 + 0.01 * i, label_smoothing=0.001 * i + 1e-4)
                before = bt.fused._FUSED["calls"]
                check(ft.sigmoid_focal_loss(x, t, **kw), **kw)
                assert bt.fused._FUSED["calls"] == before + 1, (i, kw)
            assert set(calls) == {"focalx-torch-compile"}, calls
            print("ok", n, len(calls), len(bt.fused._KERNELS))
        """
        out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=600,
                             env={**os.environ, "FOCALX_TORCH_COMPILE": "1"})
        assert out.returncode == 0, out.stderr[-3000:]
        _, first, total, kernels = out.stdout.split()
        assert int(total) == int(first) and int(kernels) == 1, out.stdout

    def test_a_process_forked_during_a_compilation_runs_and_compiles_nothing(self):
        # The compiler's locks may be held by the parent's compile thread, which the child
        # lacks: the child runs op by op (correct numbers), and exits.
        code = """if True:
            import os, sys, time, torch, focalx.torch as ft, focalx.backends.torch as bt
            torch.set_num_threads(1)  # (torch's OpenMP pool does not survive a fork)
            x = torch.randn(128, 256); t = (torch.rand(128, 256) < 0.2).float()
            want = ft.sigmoid_focal_loss(x, t, gamma=0.7)
            deadline = time.monotonic() + 60
            while not bt.fused._WORKER["running"] and time.monotonic() < deadline:
                time.sleep(0.01)
            pid = os.fork()
            if pid == 0:
                ok = all(torch.equal(ft.sigmoid_focal_loss(x, t, gamma=0.7), want)
                         for _ in range(3))
                os._exit(0 if ok and bt.fused._WORKER["thread"] is None and
                         bt.fused._FUSED["forked_mid_compile"] else 3)
            print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
        out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "FOCALX_TORCH_COMPILE": "1"})
        assert out.returncode == 0, out.stderr[-3000:]
        assert "child 0" in out.stdout, out.stdout

    def test_exit_during_a_compilation_is_clean(self):
        # The compile thread is stopped at exit; left in torch's C++ code while the
        # interpreter finalizes, it aborted the process.
        code = ("import time, torch, focalx.torch as ft\n"
                "x = torch.randn(128, 256); t = (torch.rand(128, 256) < 0.2).float()\n"
                "ft.sigmoid_focal_loss(x, t, gamma=0.7)\n"
                "import focalx.backends.torch as bt\n"
                "deadline = time.monotonic() + 60\n"
                "while bt.fused._WORKER['running'] is False and time.monotonic() < deadline:\n"
                "    time.sleep(0.01)\n"
                "time.sleep(1.5)\n"
                "print('exiting', bt.fused._WORKER['running'])\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "FOCALX_TORCH_COMPILE": "1"})
        assert out.returncode == 0, out.stderr[-3000:]
        assert "exiting" in out.stdout and "terminate called" not in out.stderr

    def test_a_call_during_interpreter_shutdown_runs_op_by_op(self):
        # A first kernel scheduled after the main thread ended cannot start the compile
        # thread (threading refuses new atexit hooks then): the call still returns its
        # loss, and wait_for_kernels does not hang.
        code = ("import threading, time, torch, focalx.torch as ft\n"
                "x = torch.randn(256, 128, requires_grad=True); t = torch.rand(256, 128)\n"
                "def late():\n"
                "    time.sleep(0.5)\n"
                "    loss = ft.sigmoid_focal_loss(x, t); loss.backward()\n"
                "    print('late ok', float(loss), ft.wait_for_kernels(timeout=30))\n"
                "threading.Thread(target=late).start()\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "FOCALX_TORCH_COMPILE": "1"})
        assert out.returncode == 0, out.stderr[-3000:]
        assert "late ok" in out.stdout, out.stderr[-3000:]


class TestEagerBlocks:
    """Large eager CPU calls op by op run the spec on row blocks, with a select that does
    not branch (backends/torch/eager.py, _EagerOps, _run_blocks): the same numbers as the whole
    run, the same errors."""

    @pytest.fixture(autouse=True)
    def _blocks(self, monkeypatch):
        from focalx.backends import torch as bt
        monkeypatch.setattr(bt.eager, "_BLOCK_MIN", 1 << 12)
        monkeypatch.setattr(bt.eager, "_BLOCK_ELEMS", 1 << 11)
        monkeypatch.setattr(bt.eager, "_SOFTMAX_BLOCK_MIN", 1 << 12)
        monkeypatch.setattr(bt.eager, "_SOFTMAX_BLOCK_ELEMS", 1 << 11)
        monkeypatch.setattr(bt.eager, "_EAGER_MIN", 1 << 12)
        self.bt = bt

    def test_an_elementwise_block_grows_with_torchs_threads(self, monkeypatch):
        # (each op of a block is a parallel region: more threads, fewer and larger blocks)
        eager = self.bt.eager
        monkeypatch.setattr(eager, "_BLOCK_ELEMS", None)
        monkeypatch.setattr(eager, "_BLOCK_MIN", 1 << 18)
        x = torch.zeros(4096, 1024)
        sizes = {}
        for threads in (1, 2, 64):
            monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
            blocks = eager._row_blocks("run_sigmoid_focal_loss", x, torch.zeros(1), {
                "reduction": "mean"})
            sizes[threads] = {(stop - start) * 1024 for start, stop in blocks[:-1]}
        assert sizes == {1: {eager._BLOCK_ELEMS_ONE_THREAD},
                         2: {2 * eager._BLOCK_ELEMS_PER_THREAD}, 64: {eager._BLOCK_ELEMS_MAX}}

    def test_where_selects_exactly(self):
        ops = self.bt.eager._EagerOps
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            a = torch.randn(5000, generator=_gen(1)).to(dtype)
            b = torch.randn(5000, generator=_gen(2)).to(dtype)
            a[::7] = float("nan")
            b[::5] = float("inf")
            a[::11] = -0.0
            c = torch.rand(5000, generator=_gen(3)) < 0.5
            got, want = ops.where(c, a, b), torch.where(c, a, b)
            assert got.dtype == dtype
            assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
        assert ops.where(c, 1.0, b.float()).dtype == torch.float32  # (scalars: torch.where)

    def test_one_at_zero_is_the_select(self):
        ops = self.bt.eager._EagerOps
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            m = torch.rand(5000, generator=_gen(4)).to(dtype)
            m[::7] = 0.0
            m[::11] = -0.0
            m[::13] = float("nan")
            m[::17] = float("inf")
            m[::19] = torch.finfo(dtype).tiny / 4  # subnormal
            got = ops.one_at_zero(m)
            want = torch.where(m <= 0, m + 1.0, m)
            assert got.dtype == dtype
            assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))

    @pytest.mark.parametrize("name,kw", [
        ("sigmoid_focal_loss", dict(gamma=2.0, alpha=0.25)),
        ("sigmoid_focal_loss", dict(gamma=0.5, alpha="rows", pos_weight="cols", weight=0.5,
                                    label_smoothing=0.1, normalizer=17.0)),
        ("sigmoid_focal_loss", dict(gamma=3.0, alpha=None, pos_weight=2.0, weight="full")),
        ("sigmoid_focal_loss_star", dict(gamma=2.0, beta=0.5, alpha=0.3)),
        ("softmax_focal_loss", dict(gamma=2.0, alpha="cols", weight="cols", ignore_index=3)),
        ("softmax_focal_loss", dict(gamma=0.5, label_smoothing=0.1, normalizer=5.0)),
        ("softmax_focal_loss", dict(gamma=1.0, targets="probs")),
    ])
    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    def test_blocks_give_the_whole_runs_numbers(self, name, kw, reduction):
        bt = self.bt
        shape = (203, 40)
        x = _logits(shape, seed=11, dtype=torch.float32)
        kw = dict(kw, reduction=reduction)
        softmax = name == "softmax_focal_loss"
        if softmax:
            t = torch.randint(0, 40, (203,), generator=_gen(12))
            if kw.pop("targets", None) == "probs":
                t = torch.softmax(_logits(shape, seed=13, dtype=torch.float32), 1)
            else:
                t[::9] = 3
            kw["axis"] = 1
        else:
            t = (torch.rand(shape, generator=_gen(12)) < 0.3).float()
        arrays = {"rows": torch.rand((203, 1), generator=_gen(14)),
                  "cols": torch.rand(40, generator=_gen(15)).tolist(),
                  "full": torch.rand(shape, generator=_gen(16))}
        kw = {k: arrays.get(v, v) if isinstance(v, str) and k != "reduction" else v
              for k, v in kw.items()}
        spec_name = "run_" + name
        assert bt.eager._row_blocks(spec_name, x, t, kw) is not None
        full = dict(pos_weight=None, weight=None, ignore_index=None, label_smoothing=0.0,
                    normalizer=None, from_logits=True, alpha=None)
        if softmax:
            full.update(ignore_index=-100)
            del full["pos_weight"]
        if name == "sigmoid_focal_loss_star":
            full = dict(alpha=None, weight=None, ignore_index=None, label_smoothing=0.0,
                        normalizer=None)
        params = dict(full, **kw)
        with torch.no_grad():
            out, grad = bt.eager._eager(spec_name, x, t, True, params)
            monkeypatch_min = bt.eager._BLOCK_MIN
            bt.eager._BLOCK_MIN = bt.eager._SOFTMAX_BLOCK_MIN = 1 << 30  # the whole, by the same ops
            try:
                want, want_g = bt.eager._eager(spec_name, x, t, True, params)
            finally:
                bt.eager._BLOCK_MIN = bt.eager._SOFTMAX_BLOCK_MIN = monkeypatch_min
        assert torch.equal(grad, want_g)
        if reduction == "none":
            assert torch.equal(out, want)
        else:
            _assert_close(out, want, rtol=1e-6)

    def test_a_bad_value_in_a_block_raises_the_whole_runs_error(self):
        x = _logits((300, 40), seed=21, dtype=torch.float32)
        t = (torch.rand((300, 40), generator=_gen(22)) < 0.3).float()
        t[250, 3] = 2.0  # in the last block only
        with pytest.raises(ValueError, match=r"got values in \[0.0, 2.0\]"):
            ft.sigmoid_focal_loss(x, t)
        y = torch.randint(0, 40, (300,), generator=_gen(23))
        y[290] = 40
        with pytest.raises(ValueError, match=r"got values in \[0, 40\]"):
            ft.softmax_focal_loss(x, y)


class TestEagerSoftmaxIndex:
    """The op-by-op softmax loss with class indices (_EagerOps.log_softmax_at: torch's
    softmax, log p at the target from it; the gradient built in the softmax's memory,
    in a block's rows of the whole gradient): the float64 reference's numbers, the
    caller's tensors untouched."""

    @pytest.fixture(autouse=True)
    def _eager(self, monkeypatch):
        from focalx.backends import torch as bt
        monkeypatch.setitem(bt.fused._FUSED, "enabled", False)
        monkeypatch.setattr(bt.eager, "_EAGER_MIN", 1 << 10)
        self.calls = 0
        inner = bt.eager._EagerOps.log_softmax_at

        def counted(ops, *args):
            self.calls += 1
            return inner(ops, *args)
        monkeypatch.setattr(bt.eager._EagerOps, "log_softmax_at", counted)
        self.bt, self.monkeypatch = bt, monkeypatch

    def _blocks(self, on):
        size = 1 << 11 if on else 1 << 30
        self.monkeypatch.setattr(self.bt.eager, "_SOFTMAX_BLOCK_MIN", min(size, 1 << 12))
        self.monkeypatch.setattr(self.bt.eager, "_SOFTMAX_BLOCK_ELEMS", size)

    @staticmethod
    def _inputs(shape, dtype, seed):
        x = _logits(shape, seed=seed, scale=4.0)
        C = shape[1]
        t = torch.randint(0, C, (shape[0],) + tuple(shape[2:]), generator=_gen(seed + 1))
        x[1] += 300.0  # a large offset
        x[2].view(C, -1)[t[2].reshape(-1)[0], 0] += 60.0  # a dominant target (p ~ 1)
        x[3].view(C, -1)[(t[3].reshape(-1)[0] + 1) % C, 0] = -math.inf  # a zero probability
        x[4].view(C, -1)[t[4].reshape(-1)[0], 0] -= 200.0  # a target of underflowing p
        return x.to(dtype), t

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("blocks", [False, True])
    @pytest.mark.parametrize("shape", [(300, 40), (70, 12, 9)])
    @pytest.mark.parametrize("kw", [dict(gamma=2.0), dict(gamma=0.0, reduction="sum"),
                                    dict(gamma=1.5, reduction="none", weight="cols",
                                         ignore_index=3),
                                    dict(gamma=2.0, alpha=0.25, normalizer=7.0)])
    def test_matches_the_float64_reference(self, dtype, blocks, shape, kw):
        self._blocks(blocks)
        x, t = self._inputs(shape, dtype, seed=31)
        C = shape[1]
        if kw.get("weight") == "cols":
            kw = dict(kw, weight=torch.rand(C, generator=_gen(33)).tolist())
        if "ignore_index" in kw:
            t.view(-1)[::7] = kw["ignore_index"]
        x.requires_grad_()
        if blocks:
            assert self.bt.eager._row_blocks("run_softmax_focal_loss", x, t, dict(
                kw, axis=1, reduction=kw.get("reduction", "mean"))) \
                is not None
        loss = ft.softmax_focal_loss(x, t, axis=1, **kw)
        cot = torch.rand(loss.shape, generator=_gen(35), dtype=torch.float64).to(dtype) \
            if loss.dim() else None
        loss.backward(cot)
        assert self.calls >= (2 if blocks else 1)
        want, want_g = ref.softmax_focal_loss_and_grad(
            x.detach().double().numpy(), t.numpy(), axis=1, **kw)
        if cot is not None:
            want_g = want_g * np.expand_dims(cot.double().numpy(), 1)
        # the conformance tolerance (conformance/tolerances.py), atol on the scale of a
        # sample's loss
        eps = torch.finfo(dtype).eps
        scale = 1.0 / t.numel() if kw.get("reduction", "mean") == "mean" else 1.0
        scale /= kw.get("normalizer", 1.0)
        for got, w in ((loss.detach().double().numpy(), want),
                       (x.grad.double().numpy(), want_g)):
            assert np.isfinite(got).all()
            err = np.abs(got - w) - (64 * eps * np.abs(w) + 2 * eps * scale)
            assert (err <= 0).all(), (np.max(err), np.argmax(err))

    @pytest.mark.parametrize("blocks", [False, True])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_leaves_the_callers_tensors_alone(self, blocks, reduction):
        self._blocks(blocks)
        x, t = self._inputs((300, 40), torch.float32, seed=41)
        x0, t0 = x.clone(), t.clone()
        x.requires_grad_()
        for leaf in (True, False):
            xi = x if leaf else x * 1.0
            mid = xi.detach().clone()
            loss = ft.softmax_focal_loss(xi, t, reduction=reduction)
            (loss.sum() if loss.dim() else loss).backward()
            assert torch.equal(xi.detach(), mid) and torch.equal(t, t0)
        with torch.no_grad():
            ft.softmax_focal_loss(x, t, reduction=reduction)
        assert torch.equal(x.detach(), x0) and torch.equal(t, t0)
        assert x.grad.data_ptr() != x.data_ptr()
        assert self.calls >= 3

    def test_a_gradient_buffer_is_reused_only_when_nothing_holds_it(self, monkeypatch):
        # (backends/torch/eager.py, _SPARE: the next blocked call writes into the last
        # gradient once its caller let go of it). Pointers and comparisons are taken
        # outside the asserts: pytest's rewritten asserts keep their operands alive.
        monkeypatch.setitem(self.bt.fused._FUSED, "enabled", False)
        monkeypatch.setattr(self.bt.eager, "_BLOCK_MIN", 1 << 12)
        monkeypatch.setattr(self.bt.eager, "_BLOCK_ELEMS", 1 << 11)
        x = torch.randn(256, 64, generator=_gen(5)).requires_grad_()
        t = (torch.rand(256, 64, generator=_gen(6)) < 0.2).float()

        def grad(**kw):
            return torch.autograd.grad(ft.sigmoid_focal_loss(x, t, **kw), x)[0]

        g1 = grad()
        want = g1.clone()
        g2 = grad(gamma=1.0)
        held = g2.data_ptr() != g1.data_ptr(), torch.equal(g1, want)
        assert held == (True, True)  # held: not reused
        view, ptr = g2[:3], g2.data_ptr()
        del g2
        g3 = grad()
        viewed = g3.data_ptr() != ptr, torch.equal(g3, want)
        assert viewed == (True, True)  # a view holds its memory
        del view
        ptr = g3.data_ptr()
        del g3
        g4 = grad()
        reused = g4.data_ptr() == ptr, torch.equal(g4, want)
        assert reused == (True, True)  # let go of: reused
        arr = g4.numpy()
        del g4
        g5 = grad(gamma=1.0)
        by_numpy = g5.data_ptr() != ptr, torch.equal(torch.from_numpy(arr), want)
        assert by_numpy == (True, True)  # a NumPy array holds it
        x.grad = None
        ft.sigmoid_focal_loss(x, t).backward()
        kept = x.grad.clone()
        grad(gamma=1.0)
        same = torch.equal(x.grad, kept)
        assert same  # .grad holds it


_DDP_SCRIPT = '''
import os, sys, numpy as np, torch, torch.distributed as dist, torch.multiprocessing as mp
import focalx.torch as ft

def batch():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(8, 6)), dtype=torch.float64)
    t = torch.tensor((rng.random((8, 3)) < 0.2).astype(np.float64))
    return x, t

def model():
    torch.manual_seed(0)
    return torch.nn.Linear(6, 3).double()

def run(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    x, t = batch()
    rows = slice(rank * 4, rank * 4 + 4)
    m = torch.nn.parallel.DistributedDataParallel(model())
    norm = ft.global_normalizer(t[rows].sum())
    loss = ft.sigmoid_focal_loss(m(x[rows]), t[rows], reduction="sum", normalizer=norm)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        np.save(out, np.concatenate([[float(total) / world, float(norm)],
                                     m.module.weight.grad.numpy().ravel()]))
    # Both ranks done, then out without gloo's teardown: torch 2.13's gloo aborted a rank
    # at exit now and then ("terminate called without an active exception"), with or
    # without focalx (2 of 15 runs of the same script on plain BCE here).
    dist.barrier()
    os._exit(0)

if __name__ == "__main__":
    out, init = sys.argv[1], "file://" + sys.argv[2]
    mp.spawn(run, args=(2, init, out), nprocs=2)
'''


def test_global_normalizer_under_ddp_gives_one_process_numbers(tmp_path):
    """Two gloo ranks, each half the batch, DDP averaging their gradients: the loss
    normalised by global_normalizer on each rank has one process's loss (the ranks'
    mean) and gradient over the whole batch normalised by all its positives."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "out.npy"
    proc = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "init")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(8, 6)), dtype=torch.float64)
    t = torch.tensor((rng.random((8, 3)) < 0.2).astype(np.float64))
    torch.manual_seed(0)
    m = torch.nn.Linear(6, 3).double()
    norm = ft.global_normalizer(t.sum())  # no process group: max(num_pos, 1)
    loss = ft.sigmoid_focal_loss(m(x), t, reduction="sum", normalizer=norm)
    loss.backward()
    assert float(norm) == max(float(t.sum()), 1.0)
    np.testing.assert_allclose(got[0], float(loss), rtol=1e-12)
    np.testing.assert_allclose(got[1], float(norm) / 2, rtol=1e-12)
    np.testing.assert_allclose(got[2:], m.weight.grad.numpy().ravel(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("num_pos, want", [(0, 1.0), (3, 3.0), (torch.tensor(0.0), 1.0),
                                           (torch.tensor([5]), 5.0)])
def test_global_normalizer_alone_clamps_to_one(num_pos, want):
    got = ft.global_normalizer(num_pos)
    assert got.shape == () and float(got) == want
    with pytest.raises(TypeError, match="num_pos"):
        ft.global_normalizer("3")


def test_module_reprs_show_every_hyperparameter():
    text = repr(ft.FocalLoss(weight=[1.0, 2.0], label_smoothing=0.1, gamma=1.5))
    for part in ("gamma=1.5", "weight=[1.0, 2.0]", "label_smoothing=0.1", "ignore_index=-100",
                 "reduction='mean'", "alpha=None"):
        assert part in text, text
    text = repr(ft.SigmoidFocalLoss(pos_weight=torch.ones(20), alpha=0.5))
    assert "pos_weight=<array of shape (20,)>" in text and "alpha=0.5" in text, text
    assert "beta=0.5" in repr(ft.SigmoidFocalLossStar(beta=0.5))


def test_sigmoid_module_takes_a_normalizer_in_forward():
    x, t = torch.randn(4, 3), (torch.rand(4, 3) < 0.4).float()
    loss_fn = ft.SigmoidFocalLoss(reduction="sum")
    _assert_close(loss_fn(x, t, normalizer=torch.tensor(4.0)), loss_fn(x, t) / 4, rtol=1e-6)


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------
# ---- Poly-1 and the Asymmetric Loss: the modules -----------------------------------------

def test_modules_take_poly1_epsilon_and_show_it():
    x = torch.randn(6, 4, dtype=torch.float64)
    y, t = torch.randint(0, 4, (6,)), (torch.rand(6, 4) < 0.4).double()
    _assert_close(ft.FocalLoss(gamma=1.5, epsilon=-1.0)(x, y),
                  ft.softmax_focal_loss(x, y, gamma=1.5, epsilon=-1.0))
    _assert_close(ft.SigmoidFocalLoss(epsilon=2.0, reduction="sum")(x, t, normalizer=3.0),
                  ft.sigmoid_focal_loss(x, t, epsilon=2.0, reduction="sum", normalizer=3.0))
    assert "epsilon=-1.0" in repr(ft.FocalLoss(epsilon=-1.0))
    assert "epsilon=0.0" in repr(ft.SigmoidFocalLoss())
    with pytest.raises(ValueError, match="epsilon"):
        ft.SigmoidFocalLoss(epsilon=float("nan"))


def test_asymmetric_loss_module_is_the_function():
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(6, 4) < 0.4).double()
    module = ft.AsymmetricLoss(gamma_pos=1.0, gamma_neg=3.0, clip=0.1, weight=[1.0, 2.0, 0.5, 1.0],
                               reduction="sum")
    got = module(x, t, normalizer=2.0)
    want, want_g = ref.asymmetric_loss_and_grad(
        x.detach().numpy(), t.numpy(), gamma_pos=1.0, gamma_neg=3.0, clip=0.1,
        weight=[1.0, 2.0, 0.5, 1.0], reduction="sum", normalizer=2.0)
    got.backward()
    _assert_close(got, torch.as_tensor(want))
    _assert_close(x.grad, torch.as_tensor(want_g))
    text = repr(module)
    for part in ("gamma_pos=1.0", "gamma_neg=3.0", "clip=0.1", "weight=[1.0, 2.0, 0.5, 1.0]",
                 "reduction='sum'"):
        assert part in text, text
    for kw, name in ((dict(clip=1.0), "clip"), (dict(gamma_neg=-1.0), "gamma_neg"),
                     (dict(weight=[-1.0]), "weight")):
        with pytest.raises(ValueError, match=name):
            ft.AsymmetricLoss(**kw)


def test_asymmetric_loss_row_blocks_and_fused_kernel_give_the_reference():
    """A large eager call (row blocks, op by op) and the fused kernel (compiled in this
    thread) give the float64 reference's ASL, loss and gradient."""
    from focalx.backends.torch import fused
    rng = np.random.default_rng(7)
    x = rng.normal(size=(600, 512)) * 4
    t = (rng.random((600, 512)) < 0.2).astype(np.float64)
    kw = dict(gamma_pos=0.5, gamma_neg=4.0, clip=0.05, reduction="mean")
    want, want_g = ref.asymmetric_loss_and_grad(x, t, **kw)
    saved = dict(fused._FUSED)
    try:
        for enabled in (False, True):
            fused._FUSED.update(enabled=enabled, background=False)
            xt = torch.tensor(x, requires_grad=True)
            loss = ft.asymmetric_loss(xt, torch.tensor(t), **kw)
            loss.backward()
            _assert_close(loss, torch.as_tensor(want), rtol=1e-12)
            _assert_close(xt.grad, torch.as_tensor(want_g), rtol=1e-11, atol=1e-300)
    finally:
        fused._FUSED.clear()
        fused._FUSED.update(saved)


def test_asymmetric_softmax_loss_module_is_the_function():
    x = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (6, 3))
    y[1, 2] = -100
    module = ft.AsymmetricSoftmaxLoss(gamma_pos=1.0, gamma_neg=2.0, label_smoothing=0.2)
    got = module(x, y)
    got.backward()
    want, want_g = ref.asymmetric_softmax_loss_and_grad(
        x.detach().numpy(), y.numpy(), gamma_pos=1.0, gamma_neg=2.0, label_smoothing=0.2,
        axis=1)
    _assert_close(got, torch.as_tensor(want))
    _assert_close(x.grad, torch.as_tensor(want_g))
    assert "gamma_neg=2.0" in repr(module) and "label_smoothing=0.2" in repr(module)
    with pytest.raises(TypeError, match="gamma_pos"):
        ft.AsymmetricSoftmaxLoss(gamma_pos=None)
class TestGeneralizedFocalLosses:
    """mmdet, ultralytics and PaddleDetection are not installable here: their formulas,
    written out as those libraries write them, differentiated by autograd (at moderate
    logits, where the textbook form is accurate), against focalx."""

    def _data(self):
        g = torch.Generator().manual_seed(18)
        x = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 3)
        q = torch.rand(6, 4, generator=g, dtype=torch.float64)
        q = torch.where(torch.rand(6, 4, generator=g) < 0.5, q, torch.zeros_like(q))
        return x, q

    @pytest.mark.parametrize("beta", [0.5, 2.0])
    def test_qfl_is_the_textbook_formula_with_its_autograd(self, beta):
        x, q = self._data()
        xa = x.clone().requires_grad_()
        p = xa.sigmoid()
        want = (torch.nn.functional.binary_cross_entropy_with_logits(xa, q, reduction="none")
                * (q - p).abs().pow(beta)).sum()
        (want_g,) = torch.autograd.grad(want, xa)
        xb = x.clone().requires_grad_()
        got = ft.quality_focal_loss(xb, q, beta=beta, reduction="sum")
        got.backward()
        torch.testing.assert_close(got, want.detach(), rtol=1e-13, atol=0)
        torch.testing.assert_close(xb.grad, want_g, rtol=1e-12, atol=1e-15)

    @pytest.mark.parametrize("iou_weighted", [True, False])
    def test_vfl_is_mmdets_formula_with_its_autograd(self, iou_weighted):
        x, q = self._data()
        xa = x.clone().requires_grad_()
        p = xa.sigmoid()
        pos = (q > 0).double()
        weight = (q if iou_weighted else 1.0) * pos + 0.75 * (p - q).abs().pow(2.0) * (1 - pos)
        want = (torch.nn.functional.binary_cross_entropy_with_logits(xa, q, reduction="none")
                * weight).mean()
        (want_g,) = torch.autograd.grad(want, xa)
        xb = x.clone().requires_grad_()
        got = ft.varifocal_loss(xb, q, iou_weighted=iou_weighted)
        got.backward()
        torch.testing.assert_close(got, want.detach(), rtol=1e-13, atol=0)
        torch.testing.assert_close(xb.grad, want_g, rtol=1e-12, atol=1e-15)

    def test_vfl_ultralytics_mapping(self):
        """ultralytics: weight alpha p^gamma (1 - label) + gt_score label, BCE against
        gt_score, .mean(1).sum() over (B, A, C); an element labelled positive with IoU 0
        is weighted 0 there."""
        g = torch.Generator().manual_seed(19)
        x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64) * 3
        label = (torch.rand(2, 5, 3, generator=g) < 0.3).double()
        score = label * torch.rand(2, 5, 3, generator=g, dtype=torch.float64)
        score[0, 0, 0], label[0, 0, 0] = 0.0, 1.0  # a positive with IoU 0
        xa = x.clone().requires_grad_()
        w = 0.75 * xa.sigmoid().pow(2.0) * (1 - label) + score * label
        want = (torch.nn.functional.binary_cross_entropy_with_logits(xa, score, reduction="none")
                * w).mean(1).sum()
        (want_g,) = torch.autograd.grad(want, xa)
        xb = x.clone().requires_grad_()
        got = ft.varifocal_loss(xb, score, reduction="sum", normalizer=5.0,
                                weight=1 - label * (score == 0).double())
        got.backward()
        torch.testing.assert_close(got, want.detach(), rtol=1e-13, atol=0)
        torch.testing.assert_close(xb.grad, want_g, rtol=1e-12, atol=1e-15)

    def test_dfl_is_mmdets_formula_below_n_bins(self):
        g = torch.Generator().manual_seed(20)
        x = torch.randn(7, 8, generator=g, dtype=torch.float64) * 2
        t = torch.rand(7, generator=g, dtype=torch.float64) * 6.9  # mmdet clamps below n
        left = t.long()
        xa = x.clone().requires_grad_()
        ce = torch.nn.functional.cross_entropy
        want = (ce(xa, left, reduction="none") * (left + 1 - t) +
                ce(xa, left + 1, reduction="none") * (t - left)).sum() / 3.0
        (want_g,) = torch.autograd.grad(want, xa)
        xb = x.clone().requires_grad_()
        got = ft.distribution_focal_loss(xb, t, reduction="sum", normalizer=3.0)
        got.backward()
        torch.testing.assert_close(got, want.detach(), rtol=1e-13, atol=0)
        torch.testing.assert_close(xb.grad, want_g, rtol=1e-12, atol=1e-15)

    def test_modules_are_the_functions(self):
        x, q = self._data()
        w = torch.rand(6, 1, dtype=torch.float64)
        torch.testing.assert_close(ft.QualityFocalLoss(beta=1.0, reduction="sum")(x, q, w, 2.0),
                                   ft.quality_focal_loss(x, q, beta=1.0, weight=w,
                                                         reduction="sum", normalizer=2.0))
        labels, scores = torch.tensor([0, 4, 3, -1, 1, 2]), q[:, 0]
        torch.testing.assert_close(ft.QualityFocalLoss()(x, (labels, scores)),
                                   ft.quality_focal_loss(x, (labels, scores)))
        torch.testing.assert_close(ft.VarifocalLoss(alpha=0.5, iou_weighted=False)(x, q),
                                   ft.varifocal_loss(x, q, alpha=0.5, iou_weighted=False))
        t = torch.tensor([0.0, 1.5, -1.0, 3.0, 2.25, 0.5], dtype=torch.float64)
        torch.testing.assert_close(ft.DistributionFocalLoss(ignore_index=-1)(x, t),
                                   ft.distribution_focal_loss(x, t, ignore_index=-1))
        with pytest.raises(ValueError, match="beta"):
            ft.QualityFocalLoss(beta=-1.0)
        with pytest.raises(TypeError, match="iou_weighted"):
            ft.VarifocalLoss(iou_weighted="yes")
        with pytest.raises(ValueError, match="ignore_index"):
            ft.DistributionFocalLoss(ignore_index=1)


def _spec_plain_runs():
    from focalx import _spec
    return _spec.PLAIN_RUNS
class TestGammaSchedule:
    """A gamma schedule changing gamma every step compiles nothing per step: focalx's fused
    kernel takes a 0-d tensor gamma as a run-time input (one kernel for every value; a
    Python float gamma is a symbolic float there too, one kernel per branch class of the
    spec: 0, each integer up to 4, other values), and a user's torch.compile takes a 0-d
    tensor gamma as an input (one graph)."""

    @pytest.fixture(autouse=True)
    def _fused(self, monkeypatch):
        from focalx.backends import torch as bt
        monkeypatch.setitem(bt.fused._FUSED, "enabled", True)
        monkeypatch.setitem(bt.fused._FUSED, "background", False)
        monkeypatch.setattr(bt.fused, "_KERNELS", {})
        self.bt = bt

    def test_the_fused_kernel_compiles_once_for_a_tensor_gamma(self):
        shape = (128, 256)  # above the fused path's threshold
        x = _logits(shape, seed=7, dtype=torch.float32)
        t = (torch.rand(shape, generator=_gen(8)) < 0.2).float()
        sched = focalx.gamma_schedule("linear", start=0.0, end=2.0, steps=10)
        cache = torch._C._dynamo.eval_frame._debug_get_cache_entry_list
        for i in range(12):
            before = self.bt.fused._FUSED["calls"]
            xg = x.clone().requires_grad_(True)
            loss = ft.sigmoid_focal_loss(xg, t, gamma=torch.tensor(sched(i)))
            (grad,) = torch.autograd.grad(loss, xg)
            assert self.bt.fused._FUSED["calls"] == before + 1, i  # the kernel ran
            want, want_g = ref.sigmoid_focal_loss_and_grad(x.double().numpy(), t.numpy(),
                                                           gamma=sched(i))
            np.testing.assert_allclose(loss.item(), want, rtol=1e-5)
            np.testing.assert_allclose(grad.numpy(), want_g, rtol=2e-5, atol=1e-9)
        (kernel,) = self.bt.fused._KERNELS.values()
        assert len(cache(kernel.fn.__code__)) == 1

    def test_a_users_torch_compile_compiles_once_for_a_tensor_gamma(self):
        self.bt.fused._FUSED["enabled"] = False  # (the user's compile only)
        graphs = []

        def counting(gm, inputs):  # a torch.compile backend that counts its graphs
            graphs.append(gm)
            return gm.forward
        _reset_dynamo()
        x = _logits((16, 5), seed=9)
        y = torch.randint(0, 5, (16,), generator=_gen(10))

        @torch.compile(backend=counting, fullgraph=True, dynamic=False)
        def step(x, y, gamma):
            return ft.softmax_focal_loss(x, y, gamma=gamma)
        sched = focalx.gamma_schedule("step", boundaries=[2, 4, 6], values=[0.0, 0.5, 1.0, 2.0])
        for i in range(8):
            got = step(x, y, torch.tensor(sched(i), dtype=torch.float64))
            want = ref.softmax_focal_loss(x.numpy(), y.numpy(), gamma=sched(i))
            np.testing.assert_allclose(got.item(), want, rtol=1e-12)
        assert len(graphs) == 1
        _reset_dynamo()


def test_modules_take_a_per_class_gamma_as_a_buffer():
    x = _logits((8, 3), seed=12)
    y = torch.randint(0, 3, (8,), generator=_gen(13))
    t = (torch.rand((8, 3), generator=_gen(14)) < 0.4).double()
    gamma = [0.0, 0.25, 2.0]
    m = ft.FocalLoss(gamma=gamma)
    assert "gamma" in dict(m.named_buffers()) and "0.25" in repr(m)
    _assert_close(m(x, y), torch.as_tensor(ref.softmax_focal_loss(x.numpy(), y.numpy(),
                                                                    gamma=gamma, axis=1)))
    s = ft.SigmoidFocalLoss(gamma=torch.tensor(gamma))
    _assert_close(s(x, t), torch.as_tensor(ref.sigmoid_focal_loss(x.numpy(), t.numpy(),
                                                                    gamma=gamma)))
    assert ft.FocalLoss(gamma=2.0).gamma == 2.0  # a number stays an attribute
    with pytest.raises(ValueError, match="gamma"):
        ft.FocalLoss(gamma=[[1.0, 2.0, 1.0]])
    with pytest.raises(ValueError, match="gamma"):
        ft.SigmoidFocalLoss(gamma=torch.tensor([1.0, -2.0]))


# ---- the fused linear + softmax focal loss (issue 19) ------------------------------------

def _linear_inputs(n=24, h=5, v=40, dtype=torch.float64, seed=19):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(v, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    y[::4] = -100
    return hidden, weight, bias, y


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "reference"])
def test_linear_at_gamma0_is_torch_linear_cross_entropy(chunked):
    h, w, b, y = _linear_inputs()
    cw = torch.rand(w.shape[0], dtype=w.dtype) + 0.5
    kw = dict(weight=cw, ignore_index=-100, label_smoothing=0.1)
    opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=8) if chunked else None
    want = F.linear_cross_entropy(h, w, y, linear_bias=b, options=opts, **kw)
    got = ft.linear_softmax_focal_loss(h, w, y, linear_bias=b, gamma=0.0, chunk_size=5, **kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(torch.autograd.grad(got, (h, w, b)), torch.autograd.grad(want, (h, w, b))):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_runs_on_the_meta_device_without_reading_a_value(reduction):
    """Meta tensors have no values: a host read (.item(), a tensor in an if) raises."""
    h = torch.empty(12, 4, device="meta", requires_grad=True)
    w = torch.empty(30, 4, device="meta", requires_grad=True)
    y = torch.empty(12, dtype=torch.long, device="meta")
    loss = ft.linear_softmax_focal_loss(h, w, y, weight=torch.ones(30, device="meta"),
                                        reduction=reduction, chunk_size=5)
    loss.sum().backward()
    assert loss.shape == ((12,) if reduction == "none" else ())
    assert h.grad.shape == h.shape and w.grad.shape == w.shape


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_traces_into_one_graph_under_torch_compile(reduction):
    """A user's torch.compile(fullgraph=True) of a function calling the linear loss traces
    it without a graph break (aot_eager: the trace, not the compiler's kernels, is what
    this checks) and gives the eager loss and gradients; ignored rows and a remainder
    block included."""
    h, w, b, y = _linear_inputs()
    c = torch.linspace(0.5, 2.0, 24, dtype=torch.float64)

    def f(h, w, b, y):
        loss = ft.linear_softmax_focal_loss(h, w, y, linear_bias=b, gamma=2.0, alpha=0.25,
                                            reduction=reduction, chunk_size=7)
        return (loss * c).sum() if reduction == "none" else loss
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got, want = compiled(h, w, b, y), f(h, w, b, y)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    for a, e in zip(torch.autograd.grad(got, (h, w, b)), torch.autograd.grad(want, (h, w, b))):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_keeps_nothing_of_the_logits_size_for_backward(reduction):
    h, w, b, y = _linear_inputs(n=64, v=200)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = ft.linear_softmax_focal_loss(h, w, y, linear_bias=b, reduction=reduction,
                                            chunk_size=16)
    assert sizes and max(sizes) <= max(h.numel(), w.numel())
    loss.sum().backward()


def test_linear_skips_ignored_rows_on_the_cpu(linear_block_rows):
    """The blocks' logits are made for the rows not ignored only; the result is the same."""
    h, w, b, y = _linear_inputs()
    loss = ft.linear_softmax_focal_loss(h, w, y, linear_bias=b, reduction="none", chunk_size=7)
    assert sum(linear_block_rows) == int((y != -100).sum()) < len(y)
    want = ft.softmax_focal_loss(h @ w.T + b, y, reduction="none")
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    c = torch.rand_like(loss)
    for a, e in zip(torch.autograd.grad((loss * c).sum(), (h, w, b)),
                    torch.autograd.grad((want * c).sum(), (h, w, b))):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_linear_focal_loss_module_takes_a_language_models_shapes():
    torch.manual_seed(0)
    m = ft.LinearFocalLoss(6, 50, bias=True, gamma=1.0, reduction="none", chunk_size=4)
    x, y = torch.randn(2, 5, 6), torch.randint(0, 50, (2, 5))
    y[0, -1] = -100
    loss = m(x, y)
    assert loss.shape == (2, 5) and loss[0, -1] == 0
    want = ft.softmax_focal_loss(m.linear(x).reshape(10, 50), y.reshape(10), gamma=1.0,
                                 reduction="none")
    torch.testing.assert_close(loss.reshape(10), want)
    with pytest.raises(ValueError, match="chunk_size"):
        ft.LinearFocalLoss(6, 50, chunk_size=0)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_batched_backward_is_the_materialised_losses(reduction):
    """A vmapped backward (is_grads_batched, jacobian(vectorize=True)): the saved
    gradients are scaled, not read with .item(), and the recomputed blocks take no
    in-place op on the batched incoming gradient."""
    torch.manual_seed(3)
    h = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 6, 2, -100, 3])
    kw = dict(reduction=reduction)
    fused = ft.linear_softmax_focal_loss(h, w, y, chunk_size=2, **kw)
    want = ft.softmax_focal_loss(h @ w.T, y, **kw)
    seeds = torch.randn((3,) + tuple(fused.shape), dtype=torch.float64)
    got = torch.autograd.grad(fused, (h, w), seeds, is_grads_batched=True)
    exp = torch.autograd.grad(want, (h, w), seeds, is_grads_batched=True)
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    if reduction == "none":
        jac = torch.autograd.functional.jacobian(
            lambda a: ft.linear_softmax_focal_loss(a, w.detach(), y, chunk_size=2, **kw),
            h.detach(),
            vectorize=True)
        torch.testing.assert_close(jac, torch.autograd.functional.jacobian(
            lambda a: ft.softmax_focal_loss(a @ w.detach().T, y, **kw), h.detach()),
            rtol=1e-10, atol=1e-12)


def test_linear_arrays_on_another_device_than_hidden_are_refused_by_name():
    """A head left on the meta device beside CPU states: torch's own matmul of the two
    returns uninitialised memory; the loss raises, naming the argument."""
    h, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    w, b = torch.randn(5, 3), torch.randn(5)
    for name, kw in (("linear_weight", dict(linear_weight=w.to("meta"))),
                     ("linear_bias", dict(linear_bias=b.to("meta"))),
                     ("targets", dict(targets=y.to("meta")))):
        args = dict(hidden=h, linear_weight=w, targets=y, **{"linear_bias": b}) | kw
        with pytest.raises(ValueError, match=f"{name} is on meta but hidden is on cpu"):
            ft.linear_softmax_focal_loss(args.pop("hidden"), args.pop("linear_weight"),
                                         args.pop("targets"), **args)
    with pytest.raises(ValueError, match="linear_weight is on cpu but hidden is on meta"):
        ft.linear_softmax_focal_loss(h.to("meta"), w, y.to("meta"))


def test_linear_focal_loss_module_refuses_a_target_of_another_shape_and_bad_sizes():
    """Flattened separately, a (T, B) target for (B, T, H) states would pair each row with
    another row's target: refused, as F.cross_entropy refuses it; so are per-class
    vectors of another length (at construction) and sizes that are not positive."""
    m = ft.LinearFocalLoss(6, 50, reduction="none")
    x = torch.randn(2, 3, 6)
    for y in (torch.zeros(3, 2, dtype=torch.long), torch.zeros(6, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"target must have shape \(2, 3\)"):
            m(x, y)
    with pytest.raises(ValueError, match=r"input must have shape \(\.\.\., 6\)"):
        m(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
    for kw in ({"weight": torch.ones(3)}, {"alpha": [0.5] * 3}, {"gamma": [2.0] * 49}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be .*length C=50"):
            ft.LinearFocalLoss(6, 50, **kw)
    for args in ((0, 50), (6, -1), (6.0, 50), (True, 50)):
        with pytest.raises(ValueError, match="in_features|num_classes"):
            ft.LinearFocalLoss(*args)


def test_linear_example_trains_a_language_model_head():
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "examples" / "linear_focal_lm_head.py"
    spec = importlib.util.spec_from_file_location("linear_focal_lm_head", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses = example.train_torch()
    assert losses[-1] < 0.9 * losses[0]
