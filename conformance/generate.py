"""Regenerate ``conformance/golden.json`` from the cases and the mpmath oracle.

    python -m focalx.conformance.generate            # rewrite the file
    python -m focalx.conformance.generate --check    # exit 1 if it would change

Needs mpmath (``pip install mpmath``). The output is byte-for-byte
deterministic: numbers are written as Python ``repr`` of the float64 nearest
to the 50-digit value, keys in a fixed order.

A case's inputs are given in float64. For each lower precision (float32,
float16, bfloat16) whose rounding changes any logit or floating target, the
oracle is evaluated again at the rounded inputs, so a backend working in that
dtype is compared with the exact loss of the inputs it actually received.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import cases as _cases

GOLDEN = Path(__file__).with_name("golden.json")
FORMAT = "focalx-golden/1"
LOW_DTYPES = ("float32", "float16", "bfloat16")


def round_to(values, dtype: str) -> list[float]:
    """float64 values as the given dtype would hold them (bfloat16 via float32, as torch does)."""
    a = np.asarray(values, dtype=np.float64)
    if dtype == "float64":
        out = a
    elif dtype in ("float32", "float16"):
        out = a.astype(dtype).astype(np.float64)
    elif dtype == "bfloat16":
        f = a.astype(np.float32)
        bits = f.view(np.uint32).astype(np.uint64)
        finite = np.isfinite(f)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
        out = np.where(finite, rounded.view(np.float32), f).astype(np.float64)
    else:
        raise ValueError(dtype)
    return [float(v) for v in out]


def _num(v) -> str | None:
    if v is None:
        return None
    return repr(float(v))


def _expected(case):
    from . import oracle  # needs mpmath
    loss, grad, scale = oracle.evaluate(case)
    return {"loss": [_num(v) for v in loss], "grad": [_num(v) for v in grad],
            "scale": _num(scale)}


def build() -> dict:
    out_cases = []
    for case in _cases.build_cases():
        entry = dict(case)
        expected = {"float64": _expected(case)}
        for dt in LOW_DTYPES:
            if dt not in case.get("dtypes", (dt,)):
                continue
            rounded = dict(case, logits=round_to(case["logits"], dt))
            if case["targets_dtype"] == "float":
                rounded["targets"] = round_to(case["targets"], dt)
            if rounded["logits"] != case["logits"] or rounded["targets"] != case["targets"]:
                expected[dt] = dict(_expected(rounded), logits=rounded["logits"],
                                    targets=rounded["targets"])
        entry["expected"] = expected
        out_cases.append(entry)
    import mpmath
    return {"format": FORMAT,
            "oracle": f"mpmath {mpmath.__version__} at {50} significant digits; "
                      "gradients by mpmath.diff of the reduced loss",
            "cases": out_cases}


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m focalx.conformance.generate")
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed file instead of writing it")
    ap.add_argument("--out", type=Path, default=GOLDEN)
    args = ap.parse_args(argv)
    text = dumps(build())
    if args.check:
        same = args.out.read_text() == text
        print(f"{args.out}: {'identical' if same else 'DIFFERS from a fresh generation'}")
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
