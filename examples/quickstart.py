"""focalx in one minute: run `python examples/quickstart.py` (needs torch).

Shows, on numbers computed right here:
1. softmax_focal_loss at gamma=0 is exactly torch's cross-entropy, options included;
2. at gamma < 1 and saturated logits, the usual formula's gradient is NaN, focalx's is finite;
3. the torch backend agrees with the float64 NumPy reference;
4. FocalLoss is a drop-in for nn.CrossEntropyLoss in a training loop.
"""

import torch
import torch.nn.functional as F

import focalx
import focalx.torch as ft

torch.manual_seed(0)

# 1. gamma=0 is cross-entropy, for every option cross_entropy has.
x = torch.randn(64, 5, 3, dtype=torch.float64)
y = torch.randint(0, 5, (64, 3))
y[::7] = -100
w = torch.rand(5, dtype=torch.float64) + 0.5
kw = dict(weight=w, label_smoothing=0.1, ignore_index=-100)
a, b = ft.softmax_focal_loss(x, y, gamma=0.0, **kw), F.cross_entropy(x, y, **kw)
print(f"1. focalx(gamma=0) = {a.item():.15f}\n   F.cross_entropy = {b.item():.15f}")

# 2. gamma=0.5 at logits +-40 (float32): the textbook formula's gradient is NaN.
xs = torch.tensor([40.0, -40.0, 3.0], requires_grad=True)
ts = torch.tensor([1.0, 0.0, 1.0])
p = torch.sigmoid(xs)
p_t = p * ts + (1 - p) * (1 - ts)
naive = (F.binary_cross_entropy_with_logits(xs, ts, reduction="none") * (1 - p_t) ** 0.5).sum()
(g_naive,) = torch.autograd.grad(naive, xs)
(g,) = torch.autograd.grad(ft.sigmoid_focal_loss(xs, ts, gamma=0.5, alpha=None, reduction="sum"), xs)
print(f"2. textbook gradient: {g_naive.tolist()}\n   focalx gradient:   {g.tolist()}")

# 3. The same call on NumPy arrays runs the float64 reference.
xt = torch.randn(1000, 4)
tt = (torch.rand(1000, 4) < 0.1).float()
t_loss = focalx.sigmoid_focal_loss(xt, tt, pos_weight=[2.0, 1.0, 1.0, 3.0])
n_loss = focalx.sigmoid_focal_loss(xt.numpy(), tt.numpy(), pos_weight=[2.0, 1.0, 1.0, 3.0])
print(f"3. torch float32: {t_loss.item():.8f}  NumPy float64 reference: {float(n_loss):.8f}  "
      f"relative difference {abs(t_loss.item() - float(n_loss)) / float(n_loss):.1e}")

# 4. Swap nn.CrossEntropyLoss for FocalLoss on imbalanced data.
X = torch.randn(2000, 8)
Y = (X[:, 0] + 0.3 * X[:, 1] > 1.6).long()  # about 7% positives
model = torch.nn.Linear(8, 2)
model.bias.data = torch.tensor([0.0, focalx.prior_bias(0.07)])  # RetinaNet-style prior
crit = ft.FocalLoss(gamma=2.0, alpha=[0.25, 0.75])  # was: torch.nn.CrossEntropyLoss()
opt = torch.optim.Adam(model.parameters(), lr=0.05)
for step in range(200):
    opt.zero_grad()
    loss = crit(model(X), Y)
    loss.backward()
    opt.step()
pred = model(X).argmax(1)
tp = ((pred == 1) & (Y == 1)).sum().item()
print(f"4. after 200 steps: loss {loss.item():.4f}, recall {tp / max(1, (Y == 1).sum().item()):.2f}, "
      f"precision {tp / max(1, (pred == 1).sum().item()):.2f}")
