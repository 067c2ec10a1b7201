"""Per-request LoRA adaptation, on one screen. Pure tensor math: no I/O, no peft, no settings.

A request's knowledge is a summed gradient g (flat, [D]). Its adapter is

    for each request i:
        A_i = A - gamma_i * alpha_A * gA_sum[i]      # (r, d_in)
        B_i = B - gamma_i * alpha_B * gB_sum[i]      # (d_out, r)
        y_i = W x_i + s * B_i A_i x_i                # s = lora_alpha / r

We never build A_i, B_i into shared weights. With dA_i = A_i - A and dB_i = B_i - B,

    B_i A_i - B A = dB_i A_i + B dA_i

so a row's output is the shared LoRA output plus a correction that is *exactly* zero when
dA_i = dB_i = 0 (gamma = 0 or no gradient gives the unadapted model bit for bit).
"""

from __future__ import annotations

import torch

__all__ = ["row_deltas", "stack_row_adapters", "lora_row_correction"]


def row_deltas(grads: torch.Tensor, step_sizes: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """Flat per-row parameter deltas  -gamma_i * alpha ⊙ g_i.

    Args:
        grads: summed gradients, (n, D).
        step_sizes: alpha expanded to the flat layout, (D,).
        gammas: one scale per row, (n,).
    Returns:
        (n, D) deltas, same dtype as `grads`.
    """
    return -(gammas[:, None] * step_sizes[None, :]) * grads  # (n, D)


def stack_row_adapters(
    A: torch.Tensor, B: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack each row's correction  dB_i A_i + B dA_i  into one down- and one up-projection.

    Built once per batch (not per forward call), so a layer's correction is two batched matmuls.

    Args:
        A: shared lora_A, (r, d_in).   B: shared lora_B, (d_out, r).
        dA: per-row delta of A, (n, r, d_in).   dB: per-row delta of B, (n, d_out, r).
    Returns:
        down (n, 2r, d_in) = [A + dA_i ; dA_i] and up (n, d_out, 2r) = [dB_i | B].
    """
    down = torch.cat([A.unsqueeze(0) + dA, dA], dim=1)                  # (n, 2r, d_in)
    up = torch.cat([dB, B.unsqueeze(0).expand(dB.shape[0], -1, -1)], dim=2)  # (n, d_out, 2r)
    return down, up


def lora_row_correction(x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scaling: float) -> torch.Tensor:
    """s * (dB_i A_i + B dA_i) x_i for every row i of a batch.

    Args:
        x: layer input, (n, T, d_in).
        down, up: from `stack_row_adapters`, (n, 2r, d_in) and (n, d_out, 2r).
    Returns:
        (n, T, d_out) correction to add to the shared LoRA layer's output.
    """
    h = torch.bmm(x, down.transpose(1, 2))          # (n, T, 2r)   = [A_i x ; dA_i x]
    return scaling * torch.bmm(h, up.transpose(1, 2))  # (n, T, d_out) = dB_i A_i x + B dA_i x
