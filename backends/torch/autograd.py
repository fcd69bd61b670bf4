"""The autograd.Function that carries the spec's closed-form gradient, and one call."""

from __future__ import annotations


import torch

from ... import _spec
from .fused import _call
from .ops import OPS, _symbolic


_N_FIXED = 7


def _compute_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _FocalFunction(torch.autograd.Function):
    """The loss of spec function `spec_name`; the logits' closed-form gradient is computed
    in forward and saved. Floating targets and hyperparameter tensors that require a
    gradient come after the fixed arguments (`names` says which is which): theirs is the
    autodiff of the spec's formula, computed in backward (see _other_grads)."""

    @staticmethod
    def forward(ctx, x, spec_name, targets, params, class_axis, grad_mode, out_dtype, names,
                *others):
        need_grad = grad_mode and ctx.needs_input_grad[0]
        out, grad = _call(spec_name, x.to(_compute_dtype(x)), targets, need_grad, params)
        _keep(ctx, x, grad if need_grad else None, spec_name, targets, params, class_axis,
              grad_mode, names)
        if need_grad:
            # saved-tensor hooks (save_on_cpu, a user's pack hook) may keep the saved
            # gradient where backward must not overwrite it
            ctx.own_grad = _no_saved_tensor_hooks(grad)
        return out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        return _backward(ctx, grad_out)


class _TransformedFocalFunction(torch.autograd.Function):
    """_FocalFunction for torch.func transforms (grad, vjp, jacrev, vmap of those), which
    take an autograd.Function only with forward and setup_context apart: the gradient
    is a second output (whose own derivative backward refuses). vmap runs forward and
    backward on batched tensors (generate_vmap_rule): no in-place product there, and the
    value checks read the values of the whole batch (see ops.concrete_range)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, spec_name, targets, params, class_axis, need_grad, out_dtype, names,
                *others):
        out, grad = _call(spec_name, x.to(_compute_dtype(x)), targets, need_grad, params)
        return out.to(out_dtype), (grad if need_grad else out.new_zeros(()))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, spec_name, targets, params, class_axis, need_grad, _, names = inputs[:_N_FIXED + 1]
        # The gradient output stays differentiable, so that a derivative taken through
        # the gradient (an outer autograd or transform over it) reaches backward below
        # and is refused there, rather than seeing a constant.
        ctx.set_materialize_grads(False)
        _keep(ctx, x, output[1] if need_grad else None, spec_name, targets, params,
              class_axis, True, names)
        ctx.transformed = True

    @staticmethod
    def backward(ctx, grad_out, grad_of_grad):
        if grad_of_grad is not None:
            raise RuntimeError(
                "focalx losses are differentiable once: a derivative of their gradient "
                "(a gradient penalty, a Hessian) is not supported")
        if grad_out is None:
            return (None,) * len(ctx.needs_input_grad)
        # (grad mode is on in a transform's backward, whatever the nesting)
        return _backward(ctx, grad_out, once=False)


def _keep(ctx, x, grad, spec_name, targets, params, class_axis, grad_mode, names):
    """What backward reads: the saved logits' gradient (None where not computed), and
    what the other inputs' gradients need."""
    ctx.class_axis = class_axis
    ctx.x_dtype = x.dtype
    ctx.transformed = False
    ctx.others = None
    if grad_mode and any(ctx.needs_input_grad[_N_FIXED + 1:]):
        ctx.others = (spec_name, targets, params, names)
        ctx.x = x  # (kept for backward only where one of `others` takes a gradient)
    ctx.own_grad = False
    ctx.has_grad = grad is not None
    if grad is not None:
        # The only full-size tensor kept for backward, in the compute dtype: for
        # float16/bfloat16 input the 1/N of a mean and the loss scale of a
        # GradScaler meet in float32, and only the result is rounded.
        ctx.save_for_backward(grad)


def _backward(ctx, grad_out, once=True):
    if once and torch.is_grad_enabled():
        # create_graph=True: a second derivative through this loss would silently
        # miss its curvature, so refuse it.
        raise RuntimeError(
            "focalx losses are differentiable once: their backward cannot be "
            "differentiated twice (create_graph=True is not supported)")
    n_others = len(ctx.needs_input_grad) - _N_FIXED - 1
    others = _other_grads(ctx, grad_out) if ctx.others else (None,) * n_others
    fixed = (None,) * _N_FIXED
    if not ctx.needs_input_grad[0] or not ctx.has_grad:
        return (None,) + fixed + tuple(others)
    (grad,) = ctx.saved_tensors
    if grad_out.dim() and ctx.class_axis is not None:  # per-sample softmax loss
        grad_out = grad_out.unsqueeze(ctx.class_axis)
    grad_out = grad_out.to(grad.dtype)
    if grad.dtype == ctx.x_dtype and ctx.own_grad and _reusable(grad, grad_out):
        # The saved gradient is used this once: scaled in place, it becomes the
        # result without a fresh full-size tensor (whose page faults cost as much
        # as the product). A loss's backward() seeds a gradient of exactly 1: on the
        # CPU that is read without a device sync, and the product (a full pass over
        # the gradient) is skipped.
        if grad_out.numel() == 1 and grad_out.device.type == "cpu" and \
                grad_out.item() == 1.0:
            return (grad,) + fixed + tuple(others)
        return (grad.mul_(grad_out),) + fixed + tuple(others)
    return ((grad_out * grad).to(ctx.x_dtype),) + fixed + tuple(others)


def _other_grads(ctx, grad_out):
    """The gradients of the targets and hyperparameter tensors among forward's `others`:
    the spec's formula run again op by op, differentiated by autograd (as the JAX backend
    does), for those that need one."""
    spec_name, targets, params, names = ctx.others
    wanted = ctx.needs_input_grad[_N_FIXED + 1:]
    if ctx.transformed:  # (torch.func: no requires_grad_ inside a transform; its own vjp)
        keys = [k for k, w in zip(names, wanted) if w]
        x = ctx.x.detach().to(_compute_dtype(ctx.x))

        def formula(*values):
            sub = dict(zip(keys, values))
            kw = {k: sub.get(k, v) for k, v in params.items()}
            return getattr(_spec, spec_name)(OPS, x, sub.get("targets", targets),
                                             need_grad=False, **kw)[0]
        out, vjp = torch.func.vjp(formula, *[targets if k == "targets" else params[k]
                                             for k in keys])
        grads = iter(vjp(grad_out.to(out.dtype)))
        return [next(grads) if w else None for w in wanted]
    with torch.enable_grad():
        copies = {k: (targets if k == "targets" else params[k]).detach().requires_grad_(w)
                  for k, w in zip(names, wanted)}
        kw = {k: copies.get(k, v) for k, v in params.items()}
        out, _ = getattr(_spec, spec_name)(OPS, ctx.x.detach().to(_compute_dtype(ctx.x)),
                                           copies.get("targets", targets), need_grad=False,
                                           **kw)
        inputs = [copies[k] for k, w in zip(names, wanted) if w]
        grads = iter(torch.autograd.grad(out, inputs, grad_out.to(out.dtype),
                                         allow_unused=True))
    return [next(grads) if w else None for w in wanted]


def _no_saved_tensor_hooks(grad) -> bool:
    if _symbolic(grad):
        return False  # (backward is traced, never in place; and dynamo cannot trace this)
    try:
        return torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    except (AttributeError, RuntimeError, TypeError):  # a private API: when in doubt, no
        return False


def _batched(t) -> bool:
    """Whether t carries a hidden batch axis (a vmapped backward: is_grads_batched,
    jacobian(vectorize=True)): no .item() and no in-place op on it. When in doubt, True."""
    try:
        ft = torch._C._functorch
        return bool(ft.is_functorch_wrapped_tensor(t) or ft.is_legacy_batchedtensor(t))
    except (AttributeError, RuntimeError, TypeError):
        return True


def _reusable(grad, grad_out) -> bool:
    """Whether backward may overwrite its saved gradient: a plain tensor of its own
    memory, the product keeps its shape (not a vmapped backward, is_grads_batched or
    jacobian(vectorize=True), whose grad_out carries a hidden batch axis), and the
    autograd graph is not kept for another backward (retain_graph=True) nor traced."""
    if _batched(grad_out) or _symbolic(grad, grad_out) or grad._base is not None or \
            not grad.is_contiguous() or grad_out.dim() > grad.dim() or \
            any(o not in (1, g) for o, g in zip(grad_out.shape[::-1], grad.shape[::-1])):
        return False
    try:
        return not torch._C._autograd._get_current_graph_task_keep_graph()
    except (AttributeError, RuntimeError):  # a private API: when in doubt, copy
        return False


def _apply(logits, spec_name, targets, params, class_axis):
    """Run spec function `spec_name` through the autograd Function. The result has the
    logits' dtype, except under torch.autocast, where it is float32 like torch's own
    losses. Targets and hyperparameter tensors that require a gradient get one."""
    out_dtype = logits.dtype
    if logits.dtype in (torch.float16, torch.bfloat16) and \
            torch.is_autocast_enabled(logits.device.type):
        out_dtype = torch.float32
    grad_mode = torch.is_grad_enabled()
    others = {}
    if grad_mode:
        others = {k: v for k, v in (("targets", targets), *params.items())
                  if isinstance(v, torch.Tensor) and v.requires_grad}
    if _transformed():
        # (inside torch.func.grad / vmap / jacrev)
        _check_transforms()
        need_grad = grad_mode and logits.requires_grad
        return _TransformedFocalFunction.apply(logits, spec_name, targets, params, class_axis,
                                               need_grad, out_dtype, tuple(others),
                                               *others.values())[0]
    return _FocalFunction.apply(logits, spec_name, targets, params, class_axis, grad_mode,
                                out_dtype, tuple(others), *others.values())


def _check_transforms() -> None:
    """Refuse the torch.func nestings whose result would silently miss this loss's
    curvature: a gradient of a gradient (grad of grad, jacrev of jacrev, hessian), and
    forward mode (jvp, jacfwd), which the closed-form gradient does not provide."""
    try:
        stack = torch._C._functorch.get_interpreter_stack() or []
        keys = [str(i.key()).rsplit(".", 1)[-1] for i in stack]
    except (AttributeError, RuntimeError, TypeError):
        return
    if "Jvp" in keys:
        raise RuntimeError(
            "focalx losses have no forward-mode derivative (torch.func.jvp, jacfwd, "
            "hessian): use reverse mode (torch.func.grad, vjp, jacrev)")
    if keys.count("Grad") > 1:
        raise RuntimeError(
            "focalx losses are differentiable once: a torch.func transform of a gradient "
            "(grad of grad, jacrev of jacrev) is not supported")


def _transformed() -> bool:
    """Whether a torch.func transform (grad, vmap, ...) is active, whatever the loss's own
    inputs (constants inside a transformed objective are not wrapped)."""
    if torch.compiler.is_dynamo_compiling():  # (dynamo cannot trace the functorch query)
        return False
    try:
        return bool(torch._C._are_functorch_transforms_active())
    except (AttributeError, RuntimeError, TypeError):
        return False
