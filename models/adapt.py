"""Per-request LoRA adaptation, on one screen. Pure tensor math: no I/O, no peft, no settings.

A request's knowledge is a summed gradient g (flat, [D]). Its adapter is

    for each request i:
        A_i = A - gamma_i * alpha_A * gA_sum[i]      # (r, d_in)
        B_i = B - gamma_i * alpha_B * gB_sum[i]      # (d_out, r)
        y_i = W x_i + s * B_i A_i x_i                # s = lora_alpha / r

We never build A_i, B_i into shared weights. With dA_i = A_i - A and dB_i = B_i - B,

    B_i A_i - B A = dB_i A_i + B dA_i

so a row's output is the shared LoRA output plus a correction (`lora_row_correction`) that is zero
when dA_i = dB_i = 0; a row without an adapter skips it and is the unadapted model bit for bit.
"""

from __future__ import annotations

import torch

__all__ = ["row_deltas", "lora_row_correction"]


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


def lora_row_correction(x: torch.Tensor, ax: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor,
                        B: torch.Tensor) -> torch.Tensor:
    """(dB_i A_i + B dA_i) x_i for every row i of a batch, from the row's deltas alone.

    With A_i = A + dA_i:  (dB_i A_i + B dA_i) x = dB_i (A x + dA_i x) + B (dA_i x), and A x is the
    shared LoRA's own down-projection, computed once for all rows. The deltas may be strided views
    of one flat (n, D) tensor: nothing is copied or stacked per row.

    Args:
        x: layer input, (n, T, d_in).    ax: A x, (n, T, r).
        dA: per-row delta of A, (n, r, d_in).    dB: per-row delta of B, (n, d_out, r).
        B: shared lora_B, (d_out, r).
    Returns:
        (n, T, d_out) correction to add to the shared LoRA output (before its scaling s).
    """
    dax = torch.bmm(x, dA.transpose(1, 2))                          # (n, T, r)      dA_i x
    return torch.bmm(ax + dax, dB.transpose(1, 2)) + dax @ B.T      # (n, T, d_out)  dB_i A_i x + B dA_i x
