"""Building the adapter: the preset's LoRA put on a frozen base model with peft, each LoRA layer then
swapped for a `RowLoraLinear` (per-row adaptation), and the learnable step sizes.

Why the row layer is swapped in after `get_peft_model` rather than registered with peft's custom-module
mechanism (`LoraConfig._register_custom_module`): that mechanism maps a *base* layer type to a LoRA layer
class that peft constructs itself (base layer, adapter name, r, alpha, ...), for every target of that type,
so the layer would have to re-implement peft's `LoraLayer` (adapters, merging, dropout, scaling) and could
not be handed the learner's row slot. `RowLoraLinear` instead wraps peft's own layer and keeps its children
(`lora_A`, `lora_B`) under the same names, so peft's parameter names, its PEFT export
(`regrad export --peft`) and `peft.PeftModel.from_pretrained` all see a standard LoRA.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import LearnerConfig
from models.errors import ModelError
from models.layout import ParamLayout
from models.row_lora import RowAdapterSlot, RowLoraLinear

__all__ = ["target_paths", "wrap_with_lora", "make_step_sizes"]


def target_paths(model: nn.Module, config: LearnerConfig) -> list[tuple[str, str]]:
    """(short name `layers.<i>.<...>`, full module path) of each LoRA target of the preset."""
    names = [n for n, _ in model.named_modules()]
    n_layers = model.config.num_hidden_layers
    bad = [i for i in config.layers if i >= n_layers]
    if bad:
        raise ModelError(f"`layers` {bad} do not exist: the base model has {n_layers} layers (0..{n_layers - 1})")
    found = []
    for i in config.layers:
        for target in config.target_modules:
            matches = [n for n in names if f"layers.{i}." in n and n.endswith(f".{target}")]
            if len(matches) != 1:
                raise ModelError(
                    f"target module {target!r} of layer {i} matched {len(matches)} modules; "
                    "use a name such as gate_proj, up_proj, down_proj, q_proj"
                )
            path = matches[0]
            found.append((path[path.index("layers.") :], path))
    return found


def wrap_with_lora(model: nn.Module, config: LearnerConfig,
                   slot: RowAdapterSlot) -> tuple[nn.Module, dict[str, RowLoraLinear], ParamLayout]:
    """`model` with the preset's LoRA (peft), every LoRA layer a `RowLoraLinear` reading `slot`; returns the
    peft model, the row layers by short name, and the flat layout of their A and B tensors."""
    from peft import LoraConfig, get_peft_model

    module_paths = target_paths(model, config)
    peft_config = LoraConfig(
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=[path for _, path in module_paths],
        # A: Kaiming-uniform, B: zeros (peft's default). The untrained learner is then the base
        # model exactly, and the first gradients reach B (dL/dB = s * g_y (A x)^T ≠ 0) even
        # though dL/dA = s * B^T g_y x^T = 0.
        init_lora_weights=True,
    )
    peft_model = get_peft_model(model, peft_config, autocast_adapter_dtype=True)
    peft_model.eval()
    named = dict(peft_model.named_modules())
    layers: dict[str, RowLoraLinear] = {}
    shapes = []
    for short, path in module_paths:
        peft_layer = next(m for n, m in named.items() if n.endswith(path) and hasattr(m, "lora_A"))
        peft_layer.lora_A["default"].float()   # LoRA weights live in float32 even when the base is bf16
        peft_layer.lora_B["default"].float()
        shapes.append((f"{short}.lora_A", tuple(peft_layer.lora_A["default"].weight.shape)))
        shapes.append((f"{short}.lora_B", tuple(peft_layer.lora_B["default"].weight.shape)))
        parent_path, _, attribute = next(n for n, m in named.items() if m is peft_layer).rpartition(".")
        row_layer = RowLoraLinear(short, peft_layer, slot)   # same children, same names
        setattr(peft_model.get_submodule(parent_path), attribute, row_layer)
        layers[short] = row_layer
    return peft_model, layers, ParamLayout(shapes)


def make_step_sizes(config: LearnerConfig, layout: ParamLayout) -> nn.ParameterDict:
    """The learnable step sizes α of `config.step_size_mode`: one per tensor (`tie`), one in all (`same`),
    one per weight (`full`), or none (`fix`: the constant `init_step_size`)."""
    mode, init = config.step_size_mode, float(config.init_step_size)
    params = nn.ParameterDict()
    if mode == "tie":
        for e in layout.entries:
            params[e.name.replace(".", "-")] = nn.Parameter(torch.tensor(init))
    elif mode == "same":
        params["all"] = nn.Parameter(torch.tensor(init))
    elif mode == "full":
        for e in layout.entries:
            params[e.name.replace(".", "-")] = nn.Parameter(torch.full(e.shape, init))
    # `fix`: no parameters; the constant comes from the config (the authors' research code crashes here).
    return params
