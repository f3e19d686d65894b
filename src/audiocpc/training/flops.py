"""Count the floating-point operations of a training step from the layers' shapes.

torch's FlopCounterMode counts matmuls and convolutions (forward and backward). A recurrent
layer is counted by it where it runs as a composite of matmuls (the CPU), and not where it
runs as one fused kernel (cuDNN): there, and only there, its cost is added from its shape:
per step and layer, 3 (GRU) or 4 (LSTM) gates of (input + hidden) x hidden multiply-adds,
times 3 for forward plus backward.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def recurrent_training_flops(module: nn.RNNBase, batch: int, steps: int) -> int:
    """Forward + backward FLOPs of a GRU or LSTM over [batch, steps], from its shape."""
    gates = 3 if isinstance(module, nn.GRU) else 4
    width, flops = module.input_size, 0
    for _ in range(module.num_layers):
        flops += 2 * gates * (width + module.hidden_size) * module.hidden_size * batch * steps
        width = module.hidden_size
    return 3 * flops  # the backward is about twice the forward


def _recurrent_hooks(model: nn.Module, counter: FlopCounterMode,
                     total: list[int]) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    for module in model.modules():
        if isinstance(module, (nn.GRU, nn.LSTM)):
            seen_before = [0]

            def before(mod: nn.RNNBase, inputs: tuple) -> None:
                seen_before[0] = counter.get_total_flops()

            def after(mod: nn.RNNBase, inputs: tuple, output: object) -> None:
                if counter.get_total_flops() > seen_before[0]:
                    return  # a composite the counter saw (CPU): counting it again would double it
                x = inputs[0]
                batch, steps = (x.shape[0], x.shape[1]) if mod.batch_first else (x.shape[1], x.shape[0])
                total[0] += recurrent_training_flops(mod, batch, steps)

            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    return handles


def count_training_flops(model: nn.Module, run_step: Callable[[], None]) -> int:
    """FLOPs of one call of `run_step` (forward and backward of `model`)."""
    extra = [0]
    with FlopCounterMode(display=False) as counter:
        handles = _recurrent_hooks(model, counter, extra)
        try:
            run_step()
        finally:
            for handle in handles:
                handle.remove()
    return int(counter.get_total_flops()) + extra[0]
