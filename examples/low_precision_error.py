"""Measure focalx.torch's error in float32 / float16 / bfloat16 against the float64 reference.

Run: `python examples/low_precision_error.py`. It prints the table of docs/numerics.md: the largest relative
error of the loss, for elements above two thresholds, over 20,001 logits in [-12, 12] with hard
targets (sigmoid) and 4,096 samples of 10 classes (softmax), each compared with the float64 NumPy
reference evaluated at the same rounded inputs.
"""

import torch

import focalx.torch as ft
from focalx import _numpy as ref


def main():
    x64 = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    xs64 = torch.randn(4096, 10, generator=gen, dtype=torch.float64) * 4
    ys = torch.randint(0, 10, (4096,), generator=gen)
    print("| dtype | max rel. error, loss > 1e-3 | loss > 1e-6 | softmax per sample, loss > 1e-3 |")
    print("|---|---|---|---|")
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        x = x64.to(dt)
        worst = {1e-3: 0.0, 1e-6: 0.0}
        for y in (0.0, 1.0):
            t = torch.full_like(x, y)
            got = ft.sigmoid_focal_loss(x, t, reduction="none").double()
            want = torch.from_numpy(ref.sigmoid_focal_loss(
                x.double().numpy(), t.double().numpy(), reduction="none"))
            rel = (got - want).abs() / want
            for k in worst:
                worst[k] = max(worst[k], rel[want > k].max().item())
        xs = xs64.to(dt)
        got = ft.softmax_focal_loss(xs, ys, reduction="none").double()
        want = torch.from_numpy(ref.softmax_focal_loss(xs.double().numpy(), ys.numpy(), axis=1,
                                                       reduction="none"))
        rel_s = ((got - want).abs() / want)[want > 1e-3].max().item()
        name = str(dt).replace("torch.", "")
        print(f"| {name} | {worst[1e-3]:.1e} | {worst[1e-6]:.1e} | {rel_s:.1e} |")


if __name__ == "__main__":
    main()
