"""The bench report (parent): the table, the first calls and the headline ratios."""

from __future__ import annotations

from .config import _BYTES, FIRST_CALL_SIZE, SAMPLE_S, format_size
from .run import machine_info, versions


def _ms(v):
    return "-" if v is None else f"{v * 1e3:.3g}" if v * 1e3 < 100 else f"{v * 1e3:.0f}"


def _ratio(peer, base):
    if peer is None or not base:
        return "-"
    r = peer / base
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"  # (a first call's ratio can be tiny)


def _arrays(nbytes, full):
    if nbytes is None or not full:
        return "n/a"
    return f"{nbytes / full:.2f}"


def format_table(result: dict) -> str:
    cfg = result["config"]
    names = [r["backend"] for r in result["backends"]]
    mach = result.get("machine") or machine_info()
    vers = result.get("versions") or versions(names)
    extra = []
    for rep in result["backends"]:
        info = rep.get("info", {})
        for key, label in (("threads", "torch threads"), ("gpu", "GPU"),
                           ("jax_device", "jax device")):
            if key in info:
                extra.append(f"{label}: {info[key]}")
    head = [f"focalx bench, {result.get('date', '')}: {mach['cpu']} ({mach['cores']} cores), "
            f"{mach['os']}, Python {mach['python']}; "
            + ", ".join(f"{k} {v}" for k, v in vers.items())
            + (f"; {', '.join(extra)}" if extra else ""),
            f"device {cfg['device']}, {cfg['repeats']} interleaved repeats after "
            f"{cfg['warmup']} warm-up call(s), each repeat calling for at least "
            f"{cfg.get('sample_s', SAMPLE_S) * 1e3:g} ms; times are medians"
            + (" (quick mode: tiny sizes, not a measurement)" if cfg["quick"] else "")
            + (f"; {cfg['jobs']} backends at once (they shared the cores)"
               if cfg.get("jobs", 1) > 1 else ""),
            ""]
    lines = ["| backend | mode | workload | dtype | elements | contender | fwd ms | "
             "fwd+bwd ms | fwd x focalx | fwd+bwd x focalx | ns/elem fwd+bwd | "
             "saved (arrays) | peak extra (arrays) |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for rep in result["backends"]:
        name = rep["backend"]
        if "crashed" in rep or "error" in rep:
            why = rep.get("crashed") or rep.get("error")
            lines.append(f"| {name} | - | - | - | - | ERROR | - | - | - | - | - | - | - |")
            notes.append(f"ERROR {name}: {why}")
            continue
        if "skipped" in rep:
            notes.append(f"skipped {name}: {rep['skipped']}")
            continue
        if rep.get("memory_error"):
            notes.append(f"ERROR {name} memory worker: {rep['memory_error']}")
        for g in rep["groups"]:
            base = next((c for c in g["contenders"] if c["role"] == "focalx"), None)
            bmed = (base or {}).get("median_s", {})
            full = g["elements"] * _BYTES.get(g["dtype"], 4)
            shape = "x".join(str(s) for s in g["shape"])
            for c in g["contenders"]:
                label = c["name"] + ("" if c["role"] != "floor" else " (floor)")
                cells = [name, g["mode"], g["workload"], g["dtype"],
                         f"{format_size(g['elements'])} ({shape})", label]
                if "skipped" in c:
                    lines.append("| " + " | ".join(cells + ["skipped"] + ["-"] * 6) + " |")
                    notes.append(f"skipped {name} {g['mode']} {g['workload']} {c['name']}: "
                                 f"{c['skipped']}")
                    continue
                med = c.get("median_s", {})
                mem = c.get("memory", {})
                saved = mem.get("saved_new_bytes")
                ns = med.get("fwd+bwd")
                cells += [_ms(med.get("fwd")), _ms(med.get("fwd+bwd")),
                          _ratio(med.get("fwd"), bmed.get("fwd")),
                          _ratio(med.get("fwd+bwd"), bmed.get("fwd+bwd")),
                          "-" if ns is None else f"{ns * 1e9 / g['elements']:.2f}",
                          _arrays(saved, full), _arrays(mem.get("peak_extra_bytes"), full)]
                if "error" in c:
                    cells[5] += " (ERROR)"
                    notes.append(f"{'ERROR' if c['role'] == 'focalx' else 'error'} {name} "
                                 f"{g['mode']} {g['workload']} {format_size(g['size'])} "
                                 f"{c['name']}: {c['error']}")
                lines.append("| " + " | ".join(cells) + " |")
                for key in ("peak_error", "saved_error"):
                    if key in mem:
                        notes.append(f"{'ERROR' if c['role'] == 'focalx' else 'error'} "
                                     f"{name} {g['mode']} {g['workload']} "
                                     f"{format_size(g['size'])} {c['name']} "
                                     f"({key.split('_')[0]} memory): {mem[key]}")
                note = f"{name}: peak memory n/a: {mem['peak_note']}" \
                    if "peak_note" in mem else None
                if note and note not in notes:
                    notes.append(note)
    for name, why in result.get("missing", {}).items():
        notes.append(f"ERROR {name}: asked for, but {why}")
    for name, why in result.get("skipped", {}).items():
        notes.append(f"skipped {name}: {why}")
    first = format_first_calls(result)
    hows = sorted({r.get("peak_how") for r in result["backends"] if r.get("peak_how")})
    foot = [
        "fwd: the loss value only (torch.no_grad / jit(loss) / no tape); fwd+bwd: the loss "
        "and its gradient w.r.t. the logits (autograd.grad, jit(value_and_grad), "
        "GradientTape, paddle.grad). Mean reduction, gamma 2, alpha 0.25 (sigmoid: targets "
        "{0,1} with ~10% positives; softmax: integer labels), logits ~ N(0, 2).",
        "x focalx: the contender's median time / focalx's median time in the same process "
        "(> 1: focalx is faster). (floor): the framework's plain cross-entropy, for context.",
        "saved: bytes kept for backward, excluding the logits and targets themselves, in "
        "full-size logits arrays (torch: saved_tensors_hooks, for torch.compile what the "
        "compiled graph saves; jax: residuals of jax.vjp outside jit; n/a elsewhere).",
        "peak extra: highest memory during one warmed-up fwd+bwd call above the memory "
        "before it, in full-size logits arrays (the gradient itself counts as 1), measured "
        "in a separate process"
        + (f": {'; '.join(hows)}" if hows else "")
        + (", with MALLOC_MMAP_THRESHOLD_ fixed so freed arrays leave the RSS and "
           "TF_ENABLE_ONEDNN_OPTS=0 for TensorFlow" if cfg["device"] == "cpu" else "") + ".",
    ]
    return "\n".join(head + lines + [""] + foot + first + ([""] + notes if notes else []))


def _first_call_rows(rep):
    """[(report, focalx's report of the same workload)] of a backend's first calls."""
    focal = {fc.get("workload"): fc for fc in rep.get("first_calls", ())
             if fc.get("role") == "focalx"}
    return [(fc, focal.get(fc.get("workload"))) for fc in rep.get("first_calls", ())]


def format_first_calls(result: dict) -> list[str]:
    rows = [(rep["backend"], fc, base) for rep in result["backends"]
            for fc, base in _first_call_rows(rep)]
    if not rows:
        return []
    lines = ["", "First call, each contender in a fresh process (float32, "
             f"{format_size(FIRST_CALL_SIZE)} elements; import: the framework and focalx's "
             "module; first and second: a fwd+bwd call, compilation included):", "",
             "| backend | mode | workload | contender | import s | first fwd+bwd s | "
             "second fwd+bwd ms | first x focalx |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    notes = []
    for name, fc, base in rows:
        label = fc.get("name", "?") + (" (floor)" if fc.get("role") == "floor" else "")
        why = fc.get("crashed") or fc.get("error") or fc.get("skipped")
        if why:
            lines.append(f"| {name} | {fc.get('mode', '-')} | {fc.get('workload', '-')} | "
                         f"{label} | - | {'skipped' if 'skipped' in fc else 'ERROR'} | - | - |")
            notes.append(f"{name} first call {fc.get('workload', '')} {label}: {why}")
            continue
        first = fc.get("first_s")
        lines.append(
            f"| {name} | {fc['mode']} | {fc['workload']} | {label} | "
            f"{fc['import_s']:.2f} | {first:.3f} | {_ms(fc.get('second_s'))} | "
            f"{_ratio(first, (base or {}).get('first_s'))} |")
    return lines + ([""] + notes if notes else [])


def headline(result: dict) -> list[str]:
    """The comparisons issue 7 asks about, one line per peer and floor: fwd+bwd time
    ratio (> 1: focalx is faster) and peak extra memory, both from one run."""
    out = []
    for rep in result["backends"]:
        for fc, base in _first_call_rows(rep):
            if fc.get("role") != "focalx" and fc.get("first_s") and (base or {}).get("first_s"):
                out.append(f"{rep['backend']} first call {fc['workload']} "
                           f"{format_size(fc['elements'])}: {fc['name']} / focalx = "
                           f"{_ratio(fc['first_s'], base['first_s'])}")
        groups = rep.get("groups", ())
        eager = {(g["workload"], g["dtype"], g["size"]): g for g in groups
                 if g["mode"] == "eager"}
        for g in groups:
            cs = {c["name"]: c for c in g["contenders"]}
            fx = next((c for c in g["contenders"] if c["role"] == "focalx"), None)
            b = ((fx or {}).get("median_s") or {}).get("fwd+bwd")
            if not b:
                continue
            full = g["elements"] * _BYTES.get(g["dtype"], 4)
            fx_peak = (fx.get("memory") or {}).get("peak_extra_bytes")
            where = (f"{rep['backend']} {g['mode']} {g['workload']} {g['dtype']} "
                     f"{format_size(g['size'])}")
            for c in g["contenders"]:
                if c["role"] == "focalx":
                    continue
                a = (c.get("median_s") or {}).get("fwd+bwd")
                if not a:
                    continue
                line = f"{where}: {c['name']} / focalx = {a / b:.2f}"
                peak = (c.get("memory") or {}).get("peak_extra_bytes")
                if peak is not None and fx_peak is not None:
                    line += (f"; peak extra {peak / full:.2f} vs focalx {fx_peak / full:.2f} "
                             "arrays")
                out.append(line)
            if g["mode"] == "compiled":
                ref = eager.get((g["workload"], g["dtype"], g["size"]))
                for c in (ref or {}).get("contenders", ()):
                    a = (c.get("median_s") or {}).get("fwd+bwd")
                    if c["role"] == "peer" and a and c["name"] in cs:
                        out.append(f"{where}: eager {c['name']} / compiled focalx = "
                                   f"{a / b:.2f}")
    return out
