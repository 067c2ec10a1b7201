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
Meta-training differentiates through the deltas and uses this form.

Serving folds each row's weights once, when the row joins (`fold_row_weight`, into a slot of
`models.row_bank.RowAdapterBank`): alpha and gamma are multiplied in then, never per step, and a
step's LoRA output for the row is B_i A_i x_i (`row_lora_output`): two batched matmuls per layer,
as many as the shared LoRA's own two.
"""

from __future__ import annotations

import torch

__all__ = ["row_deltas", "lora_row_correction", "fold_row_weight", "row_lora_output"]


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


def fold_row_weight(weight: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor,
                    out: torch.Tensor) -> torch.Tensor:
    """One row's own LoRA tensor, W_i = W - gamma_i * alpha_W * g_i[W], written into `out`.

    Rounded as the reference's in-place patch rounds it: the delta first (as `row_deltas`), then
    W + delta, so a row's weights equal the patched weights bit for bit.

    Args:
        weight: the shared tensor W, (*shape).    grad: the row's summed gradient of W, (*shape), float32.
        scale: -(gamma_i * alpha_W) in float32: a 0-d tensor, or (*shape) when alpha is per element.
        out: where W_i goes, (*shape), float32 (a slot of a stacked buffer).
    """
    torch.mul(grad, scale, out=out)                                   # (*shape)  delta_i
    return out.add_(weight)                                           # (*shape)  W + delta_i


def row_lora_output(x: torch.Tensor, A_rows: torch.Tensor, B_rows: torch.Tensor) -> torch.Tensor:
    """B_i A_i x_i for every row i of a batch, each row with its own folded weights.

    Args:
        x: layer input, (n, T, d_in).    A_rows: (n, r, d_in).    B_rows: (n, d_out, r).
    Returns:
        (n, T, d_out) the rows' LoRA output (before its scaling s).
    """
    ax = torch.bmm(x, A_rows.transpose(1, 2))                         # (n, T, r)      A_i x_i
    return torch.bmm(ax, B_rows.transpose(1, 2))                      # (n, T, d_out)  B_i A_i x_i
