"""One training step (forward, loss, backward, AdamW) captured once as a CUDA graph and replayed for every
full batch. The default model is small: on a GPU the host's ~150 kernel launches per step, not the GPU, set the
pace, and a replay launches them all at once. Used for single-process CUDA runs without a GradScaler, DBPD or
InfoBatch; the last, smaller batch of an epoch runs eagerly on the same model and optimizer.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; a tensor lr (a captured step reads it) is filled in place."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def portable_optimizer_state(state: dict) -> dict:
    """An optimizer state_dict any device can load: float lr, capturable off (the graph is rebuilt on resume)."""
    for group in state["param_groups"]:
        group["lr"] = float(group["lr"])
        group["capturable"] = False
    return state


class GraphedStep:
    """The captured step; call it with a full batch (x, y) on the GPU, after set_lr. Returns the loss tensor."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], amp_dtype: torch.dtype | None):
        self.model, self.optimizer, self.loss_fn, self.amp_dtype = model, optimizer, loss_fn, amp_dtype
        device = next(model.parameters()).device
        for group in optimizer.param_groups:
            group["capturable"] = True
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for state in optimizer.state.values():  # a resumed optimizer keeps its step counts on the CPU
            if "step" in state:
                state["step"] = state["step"].to(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shape: tuple | None = None

    def forward_backward_step(self) -> torch.Tensor:
        with torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.amp_dtype is not None, cache_enabled=False):
            logits = self.model(self.x)
        loss = self.loss_fn(logits, self.y)
        loss.backward()
        self.optimizer.step()
        return loss

    def capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Warm up on a side stream and capture, then put weights, buffers and optimizer state back as they were:
        capturing trains nothing."""
        self.x, self.y, self.shape = x.clone(), y.clone(), (tuple(x.shape), tuple(y.shape))
        saved = {name: t.detach().clone() for name, t in self.model.state_dict().items()}
        saved_optimizer = {p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
                           for p, state in self.optimizer.state.items()}
        if hasattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch"):
            torch.autograd.graph.set_warn_on_accumulate_grad_stream_mismatch(False)  # warm-up stream, by design
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                self.forward_backward_step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = self.forward_backward_step()
        with torch.no_grad():
            for name, tensor in self.model.state_dict().items():
                tensor.copy_(saved[name])
            for p, state in self.optimizer.state.items():
                before = saved_optimizer.get(p, {})
                for key, value in state.items():
                    if key in before:
                        value.copy_(before[key])
                    else:  # state the warm-up created: a fresh optimizer's is zero
                        value.zero_()

    def fits(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        return self.shape is None or self.shape == (tuple(x.shape), tuple(y.shape))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self.capture(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss.detach().clone()
