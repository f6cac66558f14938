"""Cross-process pieces of contrastive training: gathering negatives with the local shard's gradients."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from all processes along dim 0, keeping the autograd graph of the local shard.

    As open_clip's `ClipLoss(local_loss=False, gather_with_grad=False)`: the other processes' rows arrive
    without gradient (`all_gather` is not differentiable), the local rows are the local tensor itself. Every
    process must pass the same shape. Outside `torch.distributed` this returns `tensor` unchanged.
    """
    world_size, rank = _world()
    if world_size == 1:
        return tensor
    tensor = tensor.contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor.detach())
    gathered[rank] = tensor
    return torch.cat(gathered, dim=0)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`all_gather` + concatenation along dim 0 for tensors that need no gradient (masks, ids)."""
    world_size, _ = _world()
    if world_size == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, factor):
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.factor, None


def scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by `factor` in the backward pass."""
    if factor == 1:
        return tensor
    return _ScaleGradient.apply(tensor, factor)


def gather_embeddings_for_loss(tensor: torch.Tensor) -> torch.Tensor:
    """Gather embeddings for a global contrastive loss so that DDP's gradient averaging gives the exact gradient.

    Every process computes the same global loss L over the gathered rows, but backpropagates only through its own
    rows, giving dL/dθ restricted to its shard; DDP then *averages* over W processes, i.e. (1/W)·dL/dθ for the
    encoder. Scaling the local rows' gradient by W first makes the average equal dL/dθ, exactly what one process
    gets on the combined batch. Parameters used directly by the loss (the logit scale) receive the full
    gradient on every process already and are averaged to the right value, so they are left alone.
    """
    world_size, _ = _world()
    return gather_with_grad(scale_gradient(tensor, float(world_size)))
