"""Focal loss selected from a YAML config, the way PaddleVideo selects its losses.

PaddleVideo keeps losses in a registry (``paddlevideo.utils.Registry``, the
``LOSSES`` instance) filled by a ``@LOSSES.register()`` decorator, and builds
the one a config names with ``build_loss(cfg)``: the ``name`` key picks the
class, the other keys are its arguments. This file reproduces that pattern in
a few lines (PaddleVideo is not needed) and registers focalx's loss in it, so
that a config switches from cross-entropy to focal loss::

    loss:
        name: FocalLoss
        gamma: 2.0
        alpha: [0.25, 0.75]

In PaddleVideo itself, put the ``FocalLoss`` class below in
``paddlevideo/modeling/losses/`` (and import it in that package's
``__init__.py``), decorated with PaddleVideo's ``@LOSSES.register()``.
"""

from __future__ import annotations

import paddle

import focalx.paddle as fpd


class Registry:
    """name -> class, filled by a decorator (PaddleVideo's ``Registry`` pattern)."""

    def __init__(self, name):
        self.name = name
        self._classes = {}

    def register(self, cls=None, name=None):
        def add(c):
            key = name or c.__name__
            if key in self._classes:
                raise KeyError(f"{key!r} is already registered in {self.name}")
            self._classes[key] = c
            return c
        return add if cls is None else add(cls)

    def get(self, key):
        if key not in self._classes:
            raise KeyError(f"{key!r} is not registered in {self.name}; known: "
                           f"{sorted(self._classes)}")
        return self._classes[key]


LOSSES = Registry("loss")


def build_loss(cfg):
    """Construct the loss a config section names: ``name`` picks it, the rest are kwargs."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise KeyError(f"a loss config needs a 'name' key, got keys {sorted(cfg)}")
    return LOSSES.get(cfg.pop("name"))(**cfg)


@LOSSES.register()
class CrossEntropyLoss(paddle.nn.Layer):
    """PaddleVideo-style wrapper around Paddle's cross-entropy (the baseline)."""

    def __init__(self, loss_weight=1.0, **kwargs):
        super().__init__()
        self.loss_weight = loss_weight
        self.loss = paddle.nn.CrossEntropyLoss(**kwargs)

    def forward(self, score, labels):
        return self.loss_weight * self.loss(score, labels)


@LOSSES.register()
class FocalLoss(paddle.nn.Layer):
    """focalx's softmax focal loss as a PaddleVideo loss (``loss_weight`` as theirs)."""

    def __init__(self, loss_weight=1.0, gamma=2.0, alpha=None, **kwargs):
        super().__init__()
        self.loss_weight = loss_weight
        self.loss = fpd.FocalLoss(gamma=gamma, alpha=alpha, **kwargs)

    def forward(self, score, labels):
        return self.loss_weight * self.loss(score, labels)


CONFIG = """\
MODEL:
    head:
        num_classes: 2
        loss:
            name: FocalLoss
            gamma: 2.0
            alpha: [0.25, 0.75]
            loss_weight: 1.0
"""


def _scalar(text):
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(t) for t in text[1:-1].split(",") if t.strip()]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip("'\"")


def parse_simple_yaml(text):
    """Nested ``key: value`` mappings, scalars and flow lists: the subset CONFIG uses.

    Used where PyYAML is not installed (it is not a Paddle dependency).
    """
    root = {}
    stack = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key] = _scalar(value)
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


def load_config(text):
    """The config as a dict: with PyYAML when installed, else :func:`parse_simple_yaml`."""
    try:
        import yaml
    except ImportError:
        return parse_simple_yaml(text)
    return yaml.safe_load(text)


def main():
    cfg = load_config(CONFIG)
    loss = build_loss(cfg["MODEL"]["head"]["loss"])
    paddle.seed(0)
    score = paddle.randn([8, 2])
    labels = paddle.to_tensor([0, 1, 0, 0, 1, 0, 0, 0])
    value = loss(score, labels)
    print(f"built {type(loss).__name__} wrapping {loss.loss.__class__.__module__}."
          f"{type(loss.loss).__name__}(gamma={loss.loss.gamma}); loss = {float(value):.6f}")
    return loss, value


if __name__ == "__main__":
    main()
