"""Many MLPs at once with explicit batched matmuls: the ``bmm`` strategy of :class:`~geodesics.space.ParamSpace`.

For a model that is a plain ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations (the MLP tasks:
``digits_mlp``, ``mnist_mlp``, ``poly_quadratic``, ``poly_cubic``, ...), a chunk of M flat vectors ``thetas (M, P)``
is evaluated with one matmul per layer for the whole chunk, the bias folded into the matmul (``addmm`` /
``baddbmm``), and the gradient is written by hand: the backward pass runs through the layers with ``bmm``, with no
autograd graph at all. Only the task's criterion is differentiated by ``torch.func`` (``vmap`` of its gradient with
respect to the outputs), so any criterion of the task works; the classification tasks' cross-entropy, recognised by
its function, is computed and differentiated directly on the class-major logits.

Activations are kept transposed, ``(M, width, N)`` for N examples, so that every layer is ``W @ H`` with ``W`` in
``nn.Linear``'s own ``(out, in)`` layout. The first layer's input is the same for every model, so its M products
are one large GEMM ``(M * out, in) @ (in, N)`` rather than M small ones; in the backward pass its weight gradients
are likewise one GEMM ``(M * out, N) @ (N, in)``. These two GEMMs carry most of the FLOPs of a wide first layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from envs.task import Batch, Task
from envs.tasks.classification import ClassificationTask

__all__ = ["ACTIVATIONS", "MLPPlan", "UnsupportedModel", "mlp_plan"]

ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.Identity: "identity",
}
"""The elementwise modules the plan supports, by the name its forward and backward use."""


class UnsupportedModel(ValueError):
    """A model that is not a plain ``nn.Sequential`` of ``nn.Linear`` layers and supported activations."""


@dataclass(frozen=True)
class LinearLayer:
    """One ``nn.Linear`` of the plan: where its weight ``(out, in)`` and bias ``(out,)`` sit in a flat vector."""

    weight: slice
    """Columns of ``theta`` holding the weight, row-major ``(out, in)``."""
    bias: slice | None
    """Columns holding the bias, or None for a layer without one."""
    n_in: int
    """Input features."""
    n_out: int
    """Output features."""


Op = LinearLayer | str
"""A step of the plan: a linear layer, or the name of an elementwise activation (a key of the backward rules)."""


@dataclass(frozen=True)
class MLPPlan:
    """The layers of an MLP in order, with their places in the flat vector (:func:`mlp_plan` builds it)."""

    ops: tuple[Op, ...]
    """Linear layers and activations in forward order."""
    num_params: int
    """P, the length of a flat vector."""
    cross_entropy: bool = False
    """Whether the task's criterion is the mean cross-entropy of the classification tasks: then it is computed on
    the class-major outputs ``(M, classes, N)`` directly (``log_softmax`` over 10 classes in the last dimension is
    ten times slower on CPU than over dimension 1 of this layout, measured), with its gradient written out."""

    def forward(self, thetas: Tensor, inputs: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        """Outputs, transposed ``(M, out, N)``, of ``thetas (M, P)`` on ``inputs (N, in)``, and what backward needs.

        The second item has one entry per op: a linear layer's input (the shared ``inputs.T (in, N)`` for the first
        one, ``(M, in, N)`` after it), an activation's output (None before the first linear layer: shared, constant).
        """
        count = thetas.shape[0]
        shared: Tensor | None = inputs.T  # (in, N), the same for every model until the first linear layer
        hidden: Tensor | None = None  # (M, width, N) after it
        saved: list[Tensor | None] = []
        for op in self.ops:
            if isinstance(op, str):
                if hidden is None:
                    assert shared is not None
                    saved.append(None)
                    shared = _activate(op, shared)
                else:
                    hidden = _activate(op, hidden)
                    saved.append(hidden)  # the backward rules of the supported activations need only the output
                continue
            weight = thetas[:, op.weight].reshape(count, op.n_out, op.n_in)
            bias = thetas[:, op.bias].reshape(count, op.n_out, 1) if op.bias is not None else None
            if hidden is None:
                assert shared is not None
                saved.append(shared)
                flat_weight = weight.reshape(count * op.n_out, op.n_in)
                if bias is None:
                    out = torch.mm(flat_weight, shared)
                else:
                    out = torch.addmm(bias.reshape(count * op.n_out, 1), flat_weight, shared)
                hidden, shared = out.view(count, op.n_out, -1), None
            else:
                saved.append(hidden)
                hidden = torch.bmm(weight, hidden) if bias is None else torch.baddbmm(bias, weight, hidden)
        if hidden is None:
            raise UnsupportedModel("the model has no linear layer")
        return hidden, saved

    def losses(self, task: Task, thetas: Tensor, batch: Batch) -> Tensor:
        """``(M,)`` losses of ``thetas (M, P)`` on ``batch``."""
        if thetas.shape[0] == 1:
            return self.losses(task, thetas.repeat(2, 1), batch)[:1]  # see values_and_grads
        inputs, targets = batch
        outputs, _ = self.forward(thetas, _flat_inputs(inputs))
        if self.cross_entropy and _class_indices(inputs, targets):
            return _cross_entropy(outputs, targets, grad=False)[0]
        return vmap(task.criterion, in_dims=(0, None))(_shaped(outputs.transpose(1, 2), inputs), targets)

    def values_and_grads(self, task: Task, thetas: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(losses (M,), grads (M, P))`` of ``thetas (M, P)`` on ``batch``, backward written out with ``bmm``."""
        if thetas.shape[0] == 1:
            # a single model runs as two: with M = 1 the matmuls take other kernels (a 1-row product, other
            # threading), whose rounding differs from the same row in a larger chunk (measured on CPU)
            values, grads = self.values_and_grads(task, thetas.repeat(2, 1), batch)
            return values[:1], grads[:1]
        inputs, targets = batch
        count = thetas.shape[0]
        outputs, saved = self.forward(thetas, _flat_inputs(inputs))
        if self.cross_entropy and _class_indices(inputs, targets):
            values, upstream = _cross_entropy(outputs, targets, grad=True)
        else:

            def criterion(out: Tensor) -> Tensor:
                return task.criterion(_shaped(out, inputs, batched=False), targets)

            d_out, values = vmap(grad_and_value(criterion))(outputs.transpose(1, 2))
            upstream = d_out.transpose(1, 2).contiguous()  # (M, out, N): gradient of the loss w.r.t. the outputs
        grads = thetas.new_empty(count, self.num_params)
        for op, op_input in zip(reversed(self.ops), reversed(saved)):
            if isinstance(op, str):
                upstream = _activation_backward(op, upstream, op_input)
                if op_input is None:
                    break  # before the first linear layer: nothing further depends on theta
                continue
            if op.bias is not None:
                grads[:, op.bias] = upstream.sum(dim=-1)
            assert op_input is not None
            if op_input.dim() == 2:  # the first linear layer: its input is shared, one GEMM for all M weight grads
                d_weight = torch.mm(upstream.reshape(count * op.n_out, -1), op_input.T)
                grads[:, op.weight] = d_weight.view(count, -1)
                break
            grads[:, op.weight] = torch.bmm(upstream, op_input.transpose(1, 2)).view(count, -1)
            weight = thetas[:, op.weight].reshape(count, op.n_out, op.n_in)
            upstream = torch.bmm(weight.transpose(1, 2), upstream)
        return values.detach(), grads

    def values_and_grads_autograd(self, task: Task, thetas: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """The same as :meth:`values_and_grads`, with autograd over the batched forward (to compare, measured)."""
        inputs, targets = batch
        with torch.enable_grad():
            leaf = thetas.detach().requires_grad_(True)
            outputs, _ = self.forward(leaf, _flat_inputs(inputs))
            if self.cross_entropy and _class_indices(inputs, targets):
                values = _cross_entropy(outputs, targets, grad=False)[0]
            else:
                values = vmap(task.criterion, in_dims=(0, None))(_shaped(outputs.transpose(1, 2), inputs), targets)
            (grads,) = torch.autograd.grad(values.sum(), leaf)
        return values.detach(), grads

    def matmul_flops(self, examples: int, backward: bool) -> int:
        """FLOPs of the matmuls for one model on ``examples`` inputs: ``2 * m * n * k`` per product.

        Forward: one product per linear layer. Backward: the weight gradient of every layer, and the input gradient
        of every layer but the first (its input does not depend on theta). Bias additions, activations and the
        criterion are elementwise and not counted.
        """
        layers = [op for op in self.ops if isinstance(op, LinearLayer)]
        per_example = [op.n_in * op.n_out for op in layers]
        total = sum(per_example)
        if backward:
            total += sum(per_example) + sum(per_example[1:])
        return 2 * examples * total


def mlp_plan(model: nn.Module, names: list[str], task: Task | None = None) -> MLPPlan:
    """The :class:`MLPPlan` of ``model`` whose flat vectors hold the parameters ``names`` in this order.

    ``task`` (optional) lets the plan recognise the classification tasks' cross-entropy criterion.

    Raises:
        UnsupportedModel: ``model`` is not an ``nn.Sequential`` of ``nn.Linear`` layers and the activations of
            :data:`ACTIVATIONS`, or not all its parameters are trained (the reason names the offending module).
    """
    if type(model) is not nn.Sequential:
        raise UnsupportedModel(f"the model is a {type(model).__name__}, not an nn.Sequential")
    params = dict(model.named_parameters())
    if set(names) != set(params):
        frozen = sorted(set(params) - set(names))
        raise UnsupportedModel(f"parameters {frozen} are not trained")
    offsets, start = {}, 0
    for name in names:
        numel = params[name].numel()
        offsets[name] = slice(start, start + numel)
        start += numel
    ops: list[Op] = []
    for index, module in model.named_children():
        if type(module) in ACTIVATIONS:
            ops.append(ACTIVATIONS[type(module)])
        elif type(module) is nn.Linear:
            bias = offsets[f"{index}.bias"] if module.bias is not None else None
            ops.append(LinearLayer(offsets[f"{index}.weight"], bias, module.in_features, module.out_features))
        else:
            raise UnsupportedModel(f"module {index!r} is a {type(module).__name__}")
    if not any(isinstance(op, LinearLayer) for op in ops):
        raise UnsupportedModel("the model has no linear layer")
    cross_entropy = task is not None and getattr(type(task), "criterion", None) is ClassificationTask.criterion
    return MLPPlan(tuple(ops), start, cross_entropy)


def _class_indices(inputs: Tensor, targets: Tensor) -> bool:
    """Whether a batch has one row of features per example and one class index per example (the fast path)."""
    return inputs.dim() == 2 and targets.dim() == 1 and not targets.is_floating_point()


def _cross_entropy(logits: Tensor, targets: Tensor, grad: bool) -> tuple[Tensor, Tensor]:
    """``F.cross_entropy`` (mean over examples) of class-major ``logits (M, C, N)`` against ``targets (N,)``.

    Returns the losses ``(M,)`` and, with ``grad``, their gradient w.r.t. the logits ``(softmax - one_hot) / N``
    (else an empty tensor).
    """
    count, _, examples = logits.shape
    index = targets.view(1, 1, examples).expand(count, 1, examples)
    log_probs = torch.log_softmax(logits, dim=1)
    losses = -log_probs.gather(1, index).squeeze(1).mean(dim=1)
    if not grad:
        return losses, logits.new_empty(0)
    upstream = log_probs.exp_()
    upstream.scatter_add_(1, index, upstream.new_full((1, 1, 1), -1.0).expand(count, 1, examples))
    return losses, upstream.div_(examples)


def _flat_inputs(inputs: Tensor) -> Tensor:
    return inputs.reshape(-1, inputs.shape[-1])  # nn.Linear maps the last dimension; the leading ones are examples


def _shaped(outputs: Tensor, inputs: Tensor, batched: bool = True) -> Tensor:
    """``outputs (M, N, out)`` (or ``(N, out)``) with the examples back in the inputs' leading shape."""
    lead = inputs.shape[:-1]
    return outputs.reshape(*outputs.shape[:1], *lead, -1) if batched else outputs.reshape(*lead, -1)


def _activate(name: str, x: Tensor) -> Tensor:
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    return x


def _activation_backward(name: str, upstream: Tensor, output: Tensor | None) -> Tensor:
    """Gradient w.r.t. an activation's input, from the gradient w.r.t. its ``output`` (None: shared, not needed).

    The fused kernels autograd itself uses: one pass instead of two or three elementwise products (``sigmoid``:
    5x faster on CPU, measured).
    """
    if output is None or name == "identity":
        return upstream
    if name == "sigmoid":
        return torch.ops.aten.sigmoid_backward(upstream, output)
    if name == "tanh":
        return torch.ops.aten.tanh_backward(upstream, output)
    return torch.ops.aten.threshold_backward(upstream, output, 0)
