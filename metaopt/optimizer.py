"""The learned optimizer as a ``torch.optim.Optimizer``, and its differentiable twin for ``higher``.

Two thin shells over one functional core, :func:`metaopt.lstm.lstm_step`: both gather the gradients of every
parameter into one flat vector, call the shared coordinatewise LSTM once, and split the update and the new recurrent
state back per parameter. ``LearnedOptimizer`` updates parameters in place (any training loop, CPU or CUDA) and keeps
each parameter's recurrent state in ``self.state[p]["hidden"]``, so ``state_dict()``/``load_state_dict()`` carry it.
``DifferentiableLearnedOptimizer`` (registered with ``higher.register_optim``) builds new parameter tensors instead,
so ``higher.innerloop_ctx(model, LearnedOptimizer(...))`` unrolls it and meta-gradients reach the LSTM's weights.

The network is referenced by the optimizer object, never stored in ``param_groups``: higher deep-copies the groups,
and a copied network would cut the twin off from the live meta-parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import higher
import torch
from higher.optim import DifferentiableOptimizer
from torch import Tensor
from typing_extensions import override

from metaopt.checkpoint import load_net
from metaopt.lstm import (
    CoordinateLSTM,
    LSTMState,
    cat_states,
    initial_state,
    lstm_step,
    pack_state,
    split_state,
    unpack_state,
)

__all__ = ["DifferentiableLearnedOptimizer", "LearnedOptimizer"]


def _network_dtype(net: CoordinateLSTM) -> torch.dtype:
    return net.readout.weight.dtype


class LearnedOptimizer(torch.optim.Optimizer):
    """A meta-trained coordinatewise LSTM (Andrychowicz et al. 2016) used as an ordinary optimizer.

    >>> opt = LearnedOptimizer(model.parameters(), checkpoint="runs/x/checkpoints/best.pt")
    >>> loss.backward(); opt.step(); opt.zero_grad()

    Args:
        params: parameters or parameter groups (groups carry no options: the network is the whole rule).
        checkpoint: a checkpoint written by ``metaopt train``; its network is moved to the parameters' device.
        net: a network to use as is (shared, not copied: meta-training passes its live network here).
        lr: ignored; accepted so generic code that always passes a learning rate keeps working.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        checkpoint: str | Path | None = None,
        *,
        net: CoordinateLSTM | None = None,
        lr: float | None = None,
    ):
        if (checkpoint is None) == (net is None):
            raise ValueError("LearnedOptimizer needs exactly one of checkpoint=PATH (from `metaopt train`) or net=")
        super().__init__(params, defaults={})
        device = self.param_groups[0]["params"][0].device if self.param_groups[0]["params"] else None
        if net is None:
            net = load_net(checkpoint).requires_grad_(False)  # type: ignore[arg-type]
            if device is not None:
                net = net.to(device)
        elif device is not None and net.readout.weight.device != device:
            raise ValueError(
                f"the network is on {net.readout.weight.device} but the parameters are on {device}; move one of them"
            )
        self.net = net

    @override
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError("LearnedOptimizer does not support sparse gradients")
        dtype = _network_dtype(self.net)
        grads = torch.cat([p.grad.reshape(-1) for p in params]).to(dtype)
        packed = torch.cat([self._packed(p, dtype) for p in params])  # (N, L, 2, H)
        update, new_state = lstm_step(self.net, grads, unpack_state(packed))
        sizes = [p.numel() for p in params]
        for p, delta, hidden in zip(params, update.split(sizes), pack_state(new_state).split(sizes)):
            p.add_(delta.view_as(p).to(p.dtype))
            self.state[p]["hidden"] = hidden  # (numel, L, 2, H): one tensor per parameter, for state_dict()
        return loss

    def _packed(self, p: Tensor, dtype: torch.dtype) -> Tensor:
        hidden = self.state[p].get("hidden")
        if hidden is None:
            return pack_state(initial_state(self.net, p.numel(), device=p.device))
        return hidden.to(dtype)


class DifferentiableLearnedOptimizer(DifferentiableOptimizer):
    """The differentiable twin of :class:`LearnedOptimizer` (same core, new tensors instead of in-place updates).

    Built by higher from a ``LearnedOptimizer`` (``higher.innerloop_ctx`` or ``higher.optim.get_diff_optim``); the
    recurrent state of the source optimizer is copied in, so an unroll can start from a warmed-up state.

    Args:
        other: the ``LearnedOptimizer`` to mirror; its network is shared.
        reference_params: the model's parameters, as higher passes them.
        first_order: feed the LSTM detached gradients, dropping the second-derivative terms of the meta-gradient
            (the simplification used in the L2L paper); the path through the updates is kept.
        **kwargs: higher's options (``fmodel``, ``device``, ``track_higher_grads``, ...).
    """

    def __init__(
        self,
        other: torch.optim.Optimizer,
        reference_params: Iterable[Tensor],
        *,
        first_order: bool = False,
        **kwargs: Any,
    ):
        if not isinstance(other, LearnedOptimizer):
            raise TypeError(f"DifferentiableLearnedOptimizer mirrors a LearnedOptimizer, got {type(other).__name__}")
        self.net = other.net
        self.first_order = first_order
        super().__init__(other, reference_params, **kwargs)
        # Between steps the state of all updated coordinates stays one concatenated LSTMState, so the graph has no
        # per-step cat/split of it; ``self.state`` receives per-parameter pieces only when the set of updated
        # parameters changes, and in ``carry_into``.
        self._flat: tuple[list[tuple[int, int]], list[int], LSTMState] | None = None

    @override
    def _update(self, grouped_grads: list[list[Tensor]], **kwargs: Any) -> None:
        slots = [
            (group_idx, p_idx, p, g)
            for group_idx, (group, grads) in enumerate(zip(self.param_groups, grouped_grads))
            for p_idx, (p, g) in enumerate(zip(group["params"], grads))
            if g is not None
        ]
        if not slots:
            return
        dtype = _network_dtype(self.net)
        keys = [(group_idx, p_idx) for group_idx, p_idx, _, _ in slots]
        sizes = [p.numel() for _, _, p, _ in slots]
        grads = torch.cat([g.reshape(-1) for *_, g in slots]).to(dtype)
        if self.first_order:
            grads = grads.detach()
        if self._flat is not None and self._flat[0] == keys:
            state = self._flat[2]
        else:
            self._scatter_state()
            state = cat_states([self._hidden(group_idx, p_idx, p, dtype) for group_idx, p_idx, p, _ in slots])
        update, new_state = lstm_step(self.net, grads, state)
        if not self._track_higher_grads:
            new_state = tuple(part.detach() for part in new_state)
        self._flat = (keys, sizes, new_state)
        for (group_idx, p_idx, p, _), delta in zip(slots, update.split(sizes)):
            self.param_groups[group_idx]["params"][p_idx] = p + delta.view_as(p).to(p.dtype)

    def _hidden(self, group_idx: int, p_idx: int, p: Tensor, dtype: torch.dtype) -> LSTMState:
        hidden = self.state[group_idx][p_idx].get("hidden")
        if hidden is None:
            return initial_state(self.net, p.numel(), device=p.device)
        if isinstance(hidden, Tensor):  # packed, as copied from a LearnedOptimizer
            return unpack_state(hidden.to(dtype))
        return hidden

    def _scatter_state(self) -> None:
        """Move the concatenated state into ``self.state``, one piece per parameter."""
        if self._flat is not None:
            keys, sizes, state = self._flat
            for (group_idx, p_idx), hidden in zip(keys, split_state(state, sizes)):
                self.state[group_idx][p_idx]["hidden"] = hidden
            self._flat = None

    def carry_into(self, optimizer: LearnedOptimizer) -> None:
        """Store this unroll's recurrent state, detached, in ``optimizer`` (the one it was built from).

        Truncated meta-training carries the state to the next truncation this way, cutting the graph between them.
        """
        self._scatter_state()
        for group_idx, group in enumerate(optimizer.param_groups):
            for p_idx, p in enumerate(group["params"]):
                hidden = self.state[group_idx][p_idx].get("hidden")
                if hidden is not None:
                    packed = hidden if isinstance(hidden, Tensor) else pack_state(hidden)
                    optimizer.state[p]["hidden"] = packed.detach()


higher.register_optim(LearnedOptimizer, DifferentiableLearnedOptimizer)
