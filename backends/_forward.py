"""Settings that moved into a backend package's submodules stay settable on the package."""

from __future__ import annotations

import importlib
import sys
import types


def forward(package: str, names: dict[str, str]) -> None:
    """Read and write each attribute in `names` (name -> owner module) of `package`
    through its owner: ``focalx.backends.tensorflow.USE_XLA = False`` sets the value the
    owner (``...tensorflow.xla``) reads, instead of a copy nothing reads. (Properties of
    the module's class: data descriptors, which setattr, getattr and pytest's
    monkeypatch all go through.)"""
    def prop(name, owner):
        def get(_self):
            return getattr(importlib.import_module(owner), name)

        def put(_self, value):
            setattr(importlib.import_module(owner), name, value)
        return property(get, put, doc=f"{owner}.{name}")

    module = sys.modules[package]
    module.__class__ = type("ForwardingModule", (types.ModuleType,),
                            {n: prop(n, owner) for n, owner in names.items()})
