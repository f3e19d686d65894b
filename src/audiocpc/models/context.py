"""Context networks: z [B, L, in_dim] -> c [B, L, out_dim], causal (c_t sees z_1..z_t)."""

from __future__ import annotations

import math
from typing import Literal, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from audiocpc.models.layers import activation, causal_mask
from audiocpc.models.registry import register


class _Recurrent(nn.Module):
    cell: Union[type[nn.GRU], type[nn.LSTM]]

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.rnn = self.cell(in_dim, out_dim, num_layers=num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, _ = self.rnn(z)
        return c

    def layer_outputs(self, z: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Each recurrent layer's output [B, L, out_dim]; the last one is c."""
        if self.rnn.num_layers == 1:
            return [("c", self.forward(z))]
        from torch.func import functional_call

        single = self.cell(self.rnn.input_size, self.rnn.hidden_size, batch_first=True).to(z.device)
        outputs, x = [], z
        for index in range(self.rnn.num_layers):
            if index:  # the second layer's input size is the hidden size
                single = self.cell(self.rnn.hidden_size, self.rnn.hidden_size, batch_first=True).to(z.device)
            weights = {f"{name}_l0": getattr(self.rnn, f"{name}_l{index}")
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            x, _ = functional_call(single, weights, (x,))
            outputs.append((f"context.layer{index + 1}", x))
        outputs[-1] = ("c", x)
        return outputs


@register("context", "gru")
class GRUContext(_Recurrent):
    cell = nn.GRU


@register("context", "lstm")
class LSTMContext(_Recurrent):
    """`forget_bias`: the forget gates' initial bias (Keras's `unit_forget_bias` sets 1, so that
    the cell remembers from the first step; PyTorch's default is 0)."""

    cell = nn.LSTM

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 1, dropout: float = 0.0,
                 forget_bias: float = 0.0):
        super().__init__(in_dim, out_dim, num_layers, dropout)
        hidden = self.rnn.hidden_size
        with torch.no_grad():  # gates are stacked input, forget, cell, output; the two biases add
            for index in range(num_layers):
                getattr(self.rnn, f"bias_ih_l{index}")[hidden:2 * hidden].fill_(forget_bias)
                getattr(self.rnn, f"bias_hh_l{index}")[hidden:2 * hidden].zero_()


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal position codes for any length, so embedding can use any number of steps."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                    * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * div)
    codes[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return codes


POSITIONS = ("sinusoidal", "none", "conv")  # TransformerContext's choices of position information


@register("context", "transformer")
class TransformerContext(nn.Module):
    """Causal Transformer encoder blocks, then a dense stack to out_dim (the reference's)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        max_len: int = 0,
        num_layers: int = 2,
        num_heads: int = 2,
        dff: int = 100,
        dense_units: Sequence[int] = (100,),
        dropout: float = 0.1,
        activation_fn: Literal["leaky_relu", "relu", "gelu", "tanh"] = "leaky_relu",
        norm_first: bool = False,
        scale_input: bool = True,
        position: Literal["sinusoidal", "none", "conv"] = "sinusoidal",
        position_kernel: int = 5,
    ):
        super().__init__()
        if in_dim % num_heads:
            raise ValueError(f"model.z_dim ({in_dim}) must be divisible by num_heads ({num_heads})")
        if position not in POSITIONS:
            raise ValueError(f"model.context.position: '{position}' is not one of {', '.join(POSITIONS)}")
        if position_kernel < 1:
            raise ValueError(f"model.context.position_kernel ({position_kernel}) must be at least 1")
        # norm_first: layer norm before attention and feed-forward (pre-LN), and once after the
        # last block; post-LN (the original Transformer's, False) needs a careful warm-up
        block = nn.TransformerEncoderLayer(in_dim, num_heads, dim_feedforward=dff, dropout=dropout,
                                           batch_first=True, norm_first=norm_first)
        self.blocks = nn.TransformerEncoder(block, num_layers, enable_nested_tensor=False,
                                            norm=nn.LayerNorm(in_dim) if norm_first else None)
        self.dropout = nn.Dropout(dropout)
        dense: list[nn.Module] = []
        width = in_dim
        for units in dense_units:
            dense += [nn.Linear(width, units), activation(activation_fn)]
            width = units
        dense.append(nn.Linear(width, out_dim))
        self.dense = nn.Sequential(*dense)
        self.max_len = max_len  # informational: positions are computed for any length
        # z x sqrt(dim) before the position codes, as the Transformer paper scales its
        # embeddings (and the reference did); False adds the codes to z as it is
        self.input_scale = math.sqrt(in_dim) if scale_input else 1.0
        # Where the blocks learn the order of the steps from. sinusoidal: fixed codes added to z
        # (the reference's); none: only the causal mask (a causal Transformer can count the
        # steps it may see); conv: a causal depthwise convolution over the last
        # position_kernel steps of z, added to z (wav2vec 2.0's relative positions, made causal)
        self.position = position
        self.position_conv = (nn.Conv1d(in_dim, in_dim, position_kernel, groups=in_dim)
                              if position == "conv" else None)

    def embed_input(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, L, in_dim] -> the first block's input: z, scaled, with the step positions."""
        x = z * self.input_scale
        if self.position == "sinusoidal":
            x = x + sinusoidal_positions(z.shape[1], z.shape[-1], z.device).to(z.dtype)
        elif self.position_conv is not None:
            past = F.pad(z.transpose(1, 2), (self.position_conv.kernel_size[0] - 1, 0))
            x = x + F.gelu(self.position_conv(past)).transpose(1, 2)
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.embed_input(z)
        x = self.blocks(self.dropout(x), mask=causal_mask(z.shape[1], z.device), is_causal=True)
        return self.dense(x)

    def layer_outputs(self, z: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Each Transformer block's output [B, L, in_dim], then c (after the dense stack)."""
        mask = causal_mask(z.shape[1], z.device)
        x = self.dropout(self.embed_input(z))
        outputs = []
        for index, block in enumerate(self.blocks.layers):
            x = block(x, src_mask=mask, is_causal=True)
            outputs.append((f"context.block{index + 1}", x))
        if self.blocks.norm is not None:
            x = self.blocks.norm(x)
        outputs.append(("c", self.dense(x)))
        return outputs
