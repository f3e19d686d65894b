"""Count the floating-point operations of a training step from the layers' shapes.

torch's FlopCounterMode counts matmuls and convolutions (forward and backward); recurrent
layers run as fused kernels it does not see, so their cost is added from their shapes:
per step and layer, 3 (GRU) or 4 (LSTM) gates of (input + hidden) x hidden multiply-adds,
times 3 for forward plus backward.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _recurrent_hooks(model: nn.Module, total: list[int]) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    for module in model.modules():
        if isinstance(module, (nn.GRU, nn.LSTM)):
            gates = 3 if isinstance(module, nn.GRU) else 4

            def hook(mod: nn.RNNBase, inputs: tuple, output: object, gates: int = gates) -> None:
                x = inputs[0]
                batch, steps = (x.shape[0], x.shape[1]) if mod.batch_first else (x.shape[1], x.shape[0])
                width = mod.input_size
                flops = 0
                for _ in range(mod.num_layers):
                    flops += 2 * gates * (width + mod.hidden_size) * mod.hidden_size * batch * steps
                    width = mod.hidden_size
                total[0] += 3 * flops  # forward + backward (about twice the forward)

            handles.append(module.register_forward_hook(hook))
    return handles


def count_training_flops(model: nn.Module, run_step: Callable[[], None]) -> int:
    """FLOPs of one call of `run_step` (forward and backward of `model`)."""
    extra = [0]
    handles = _recurrent_hooks(model, extra)
    try:
        with FlopCounterMode(display=False) as counter:
            run_step()
    finally:
        for handle in handles:
            handle.remove()
    return int(counter.get_total_flops()) + extra[0]
