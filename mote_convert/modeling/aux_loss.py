"""The load-balancing loss's gradient, carried by the autograd graph itself.

Each MoE layer's ``L_aux`` must add ``coef * dL_aux`` to the gradients of a training step that
backpropagates ``outputs.loss = lm_loss + coef * sum(L_aux)``. Adding the blocks' stashed ``L_aux``
tensors to the loss after the forward (a stash) breaks under reentrant gradient checkpointing, whose
first forward runs without autograd. Instead (as Megatron's MoE auxiliary-loss scaler does):

* every block passes its output through :class:`InjectAuxGrad`, an identity whose backward also
  sends ``coef * g`` into that block's ``L_aux`` graph; under checkpointing the block's forward is
  re-run with autograd during the backward, so the graph is there when it is needed;
* ``g`` is the gradient that reaches ``outputs.loss`` (1 for ``loss.backward()``, ``1/k`` under
  gradient accumulation, the loss scale under fp16 scaling): :class:`ProbeLossGrad` on the returned
  loss records it when the backward starts, before any block's backward runs;
* the value of ``coef * sum(L_aux)`` is added to ``outputs.loss`` detached, for logging.

A backward that does not start from ``outputs.loss`` (a loss of the caller's own) records no ``g``
and the blocks add nothing: such a caller adds ``coef * mote_convert.aux_loss(model)`` itself.
"""

from __future__ import annotations

from typing import Any

import torch


class AuxGradCell:
    """Shared by the blocks of one model: the coefficient and the current backward's loss gradient."""

    def __init__(self, coef: float) -> None:
        self.coef = coef
        self.grad: torch.Tensor | None = None


class InjectAuxGrad(torch.autograd.Function):
    """Identity on ``hidden``; its backward also sends ``coef * g`` into ``aux``."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, aux: torch.Tensor, cell: AuxGradCell) -> torch.Tensor:
        ctx.cell = cell
        ctx.aux_meta = (aux.shape, aux.dtype, aux.device)
        return hidden.clone()  # not a view: the caller may modify its output in place

    @staticmethod
    def backward(ctx: Any, grad_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        shape, dtype, device = ctx.aux_meta
        g = ctx.cell.grad
        if g is None or not ctx.cell.coef:
            aux_grad = torch.zeros(shape, dtype=dtype, device=device)
        else:
            aux_grad = (g.to(device=device, dtype=dtype) * ctx.cell.coef).expand(shape)
        return grad_hidden, aux_grad, None


class ProbeLossGrad(torch.autograd.Function):
    """Identity on the loss; its backward records the gradient reaching it in the cell."""

    @staticmethod
    def forward(ctx: Any, loss: torch.Tensor, cell: AuxGradCell) -> torch.Tensor:
        ctx.cell = cell
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.cell.grad = grad.detach().sum()  # the loss is a scalar: its gradient too
        return grad, None


def carry_aux_grad(hidden: torch.Tensor, aux: torch.Tensor, cell: AuxGradCell | None) -> torch.Tensor:
    """``hidden``, made to carry ``aux``'s gradient when autograd records and the router learns."""
    if cell is None or not torch.is_grad_enabled() or not aux.requires_grad:
        return hidden
    return InjectAuxGrad.apply(hidden, aux, cell)


def probe_loss(loss: torch.Tensor, cell: AuxGradCell) -> torch.Tensor:
    """``loss``, made to record the gradient that reaches it (see the module's docstring)."""
    if not torch.is_grad_enabled() or not loss.requires_grad:
        return loss
    return ProbeLossGrad.apply(loss, cell)
