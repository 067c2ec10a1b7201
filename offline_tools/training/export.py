"""Export a trained learner into a folder of its own, optionally with bf16 LoRA weights (half the bytes).

    regrad export --checkpoint run/best --output checkpoints/my-learner --weights-dtype bfloat16
    regrad export --checkpoint run-a/best --checkpoint run-b/best --output checkpoints/my-soup

The exported learner is loaded, rounded (bf16) and saved with the fingerprint of the rounded
weights, so a gradient store must be encoded with the exported learner, not the run's. The run's
record (training_log.jsonl, gzipped; training_curves.png, as a palette PNG; summary.json; train_args.json;
found beside the checkpoint folder) is copied along when present. A run warm-started from another learner
(`regrad train --init-from`) also gets `init.json` (that learner's path and fingerprint) and that
learner's own record under `init/` (a shipped folder's `runs/` and `soup.json` included): the
exported folder keeps the whole lineage.

With several checkpoints (one preset, one base model) the export is their uniform average, a model
soup (`Learner.load_average`): each run's record goes to `runs/<i>/` in the order given, and
`soup.json` names the averaged checkpoints and their fingerprints.

    regrad export --checkpoint run/best --peft adapters/regrad-lora

With `--peft` (`export_peft`) the learner's LoRA is written instead as a standard PEFT adapter folder
(`adapter_config.json` + `adapter_model.safetensors`, no pickle) for its base model, loadable with
`peft.PeftModel.from_pretrained(base, folder)`. The step sizes are not part of a PEFT adapter: the adapter
is the learner with no passage gradients applied (the model behind modes `closed_book` and `rag`).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["INIT_JSON", "LOG_GZ", "PEFT_FILES", "RUN_RECORD", "SOUP_JSON", "export_learner", "export_peft",
           "write_peft_adapter"]

RUN_RECORD = ("training_log.jsonl", "training_curves.png", "summary.json", "train_args.json")
LOG = "training_log.jsonl"
LOG_GZ = LOG + ".gz"   # exported logs are gzipped: 5x smaller, and a shipped folder must stay under 5 MB
SOUP_JSON = "soup.json"
INIT_JSON = "init.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")   # what `export_peft` writes
_RECORD_FILES = {*RUN_RECORD, LOG_GZ, SOUP_JSON, INIT_JSON}  # what an exported folder's record is made of


def _copy(source: Path, target: Path) -> str:
    """Copy one record file; a training log is written gzipped (reproducibly: no name or time in the header)
    and a plot as a palette PNG (`compact_png`: what a run wrote before plots were compact shrinks too)."""
    from offline_tools.training.plots import compact_png

    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".png":
        compact_png(source, target)
        return target.name
    if source.name != LOG:
        shutil.copyfile(source, target)
        return target.name
    with source.open("rb") as raw, gzip.GzipFile(target.with_name(LOG_GZ), "wb", mtime=0) as packed:
        shutil.copyfileobj(raw, packed)
    return LOG_GZ


def _copy_record(checkpoint: Path, folder: Path) -> list[str]:
    """The run's record found beside `checkpoint` (its best/), into `folder`; and, for a warm-started run
    (`regrad train --init-from`), the starting learner's fingerprint (`init.json`) and record (`init/`)."""
    copied = [_copy(checkpoint.parent / name, folder / name) for name in RUN_RECORD
              if (checkpoint.parent / name).is_file()]
    train_args = checkpoint.parent / "train_args.json"
    init = json.loads(train_args.read_text()).get("init_from") if train_args.is_file() else None
    if init and (Path(init) / "learner.json").is_file():
        copied += _copy_init(Path(init), folder)
    return copied


def _copy_init(init: Path, folder: Path) -> list[str]:
    from models import Learner
    from offline_tools.files import atomic_text

    with atomic_text(folder / INIT_JSON) as f:
        json.dump({"init_from": str(init), "fingerprint": Learner.read_meta(init)["fingerprint"],
                   "record": "init"}, f, indent=2)
    if not any((init / name).is_file() for name in _RECORD_FILES):
        _copy_record(init, folder / "init")   # a run's best/: its record is beside it
    else:                                      # an exported folder: its record is inside it, runs/ included
        for path in sorted(p for p in init.rglob("*") if p.is_file() and p.name in _RECORD_FILES):
            _copy(path, folder / "init" / path.relative_to(init))
    return [INIT_JSON, "init/"]


def export_learner(checkpoint: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike,
                   weights_dtype: str = "bfloat16") -> dict:
    """Load `checkpoint` (several: their average), save it to `output` with LoRA weights in `weights_dtype`.

    Returns a report: the output, its fingerprint, the source fingerprint(s), its size, the record copied.
    """
    from models import Learner, ModelError
    from offline_tools.files import atomic_text

    sources = [Path(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else [Path(c) for c in checkpoint]
    output = Path(output)
    for source in sources:
        if output.resolve() == source.resolve():
            raise ModelError(f"--output {output} is the checkpoint folder {source} itself; export into a new folder")
    learner = Learner.load_average(sources)   # one checkpoint: `load`; each one's fingerprint is checked
    source_fingerprints = [Learner.read_meta(s)["fingerprint"] for s in sources]
    learner.save(output, weights_dtype=weights_dtype)
    report = {"output": str(output), "weights_dtype": weights_dtype, "fingerprint": learner.fingerprint}
    if len(sources) == 1:
        report |= {"source_fingerprint": source_fingerprints[0], "copied": _copy_record(sources[0], output)}
    else:
        averaged = [{"checkpoint": str(s), "fingerprint": f, "record": f"runs/{i}",
                     "copied": _copy_record(s, output / "runs" / str(i))}
                    for i, (s, f) in enumerate(zip(sources, source_fingerprints), start=1)]
        # A source with no record beside it that another source started from (its --init-from: an average
        # of a run and the learner it was warm-started from): its record is that source's init/ one.
        inits = {json.loads(p.read_text())["fingerprint"]: p.parent.relative_to(output).as_posix() + "/init"
                 for p in sorted(output.glob(f"runs/*/{INIT_JSON}"))}
        for entry in averaged:
            if not entry["copied"] and entry["fingerprint"] in inits:
                entry["record"] = inits[entry["fingerprint"]]
        with atomic_text(output / SOUP_JSON) as f:
            json.dump({"average": "uniform, elementwise over LoRA A, LoRA B and step sizes",
                       "fingerprint": learner.fingerprint, "weights_dtype": weights_dtype, "checkpoints": averaged},
                      f, indent=2)
        report["averaged"] = averaged
    report["bytes"] = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    return report


def write_peft_adapter(learner, directory: str | os.PathLike, weights_dtype: str = "float32") -> list[str]:
    """Write `learner`'s LoRA into `directory` as a PEFT adapter (peft's own config and tensor names).

    `RowLoraLinear` keeps peft's `lora_A`/`lora_B` children, so the learner's parameter names are peft's:
    a tensor is saved under its name less the adapter name, `base_model.model.<path>.lora_A.weight`, as
    `PeftModel.save_pretrained` saves it. (peft's `get_peft_model_state_dict` finds LoRA layers by their
    type, and the learner's are `RowLoraLinear`s, so the names are made here.) The step sizes are left out (a
    PEFT adapter has no place for them): loaded, the adapter is the learner with no passage gradients applied.
    """
    import dataclasses

    import torch
    from safetensors.torch import save_file

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[weights_dtype]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(learner.model.peft_config["default"], inference_mode=True,
                                 base_model_name_or_path=learner.config.base_model)
    state = {name.replace(".default.", "."): tensor for name, tensor in learner.model.named_parameters()
             if ".lora_A.default." in name or ".lora_B.default." in name}
    expected = 2 * len(learner.lora_modules)
    if len(state) != expected:   # every LoRA layer's A and B, nothing else (no step sizes, no base weights)
        raise RuntimeError(f"found {len(state)} LoRA tensors in the learner, expected {expected}: {sorted(state)[:4]}")
    save_file({k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()},
              str(directory / PEFT_FILES[1]), metadata={"format": "pt"})
    config.save_pretrained(str(directory))
    return list(PEFT_FILES)


def export_peft(checkpoint: str | os.PathLike | Sequence[str | os.PathLike], directory: str | os.PathLike,
                weights_dtype: str = "float32") -> dict:
    """Load `checkpoint` (several: their uniform average, as `export_learner`) and write its LoRA into
    `directory` as a PEFT adapter (`write_peft_adapter`). `directory` must be new or empty.

    Returns a report: the folder, the files, the base model, the learner's fingerprint and the source(s).
    """
    from models import Learner, ModelError

    sources = [Path(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else [Path(c) for c in checkpoint]
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ModelError(f"--peft {directory} exists and is not an empty folder; export into a new or empty folder")
    learner = Learner.load_average(sources)
    files = write_peft_adapter(learner, directory, weights_dtype)
    return {"peft": str(directory), "files": files, "base_model": learner.config.base_model,
            "weights_dtype": weights_dtype, "fingerprint": learner.fingerprint,
            "checkpoints": [str(s) for s in sources],
            "bytes": sum((directory / name).stat().st_size for name in files),
            "left_out": "step sizes (a PEFT adapter is the learner with no passage gradients applied)"}
