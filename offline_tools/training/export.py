"""Export a trained learner into a folder of its own, with 16-bit LoRA weights (half the bytes).

    regrad export --checkpoint run/best --output checkpoints/my-learner
    regrad export --checkpoint run-a/best --checkpoint run-b/best --output checkpoints/my-soup
    regrad export --checkpoint run/best --output checkpoints/my-learner --composition likelihood:0.2

The exported learner is loaded, rounded (float16 by default: bf16's bytes, rounded 8x less, which moves
fewer answers: docs/results.md, rule 22a; `--weights-dtype bfloat16` for a learner whose LoRA holds values
beyond float16's ±65504, which float16 refuses with nothing written) and saved with the fingerprint of
the rounded weights, so a gradient store must be encoded with the exported learner, not the run's. Its lineage goes
along, flat (offline_tools/training/lineage.py): `lineage.json` lists every run, warm start and average
that made it, and each run's record (training_log.jsonl, gzipped; training_curves.png, as a palette PNG;
summary.json; train_args.json; found beside the checkpoint folder) is copied to `runs/<fingerprint[:12]>/`.
A run warm-started from another learner (`regrad train --init-from`) brings that learner's lineage first.

With several checkpoints (one preset, one base model) the export is their uniform average, a model
soup (`Learner.load_average`), and its last lineage step is that `average`.

The exported learner is served by default with the composition in its learner.json (`engine.composition`):
the checkpoint's own (a run saves the one it was meta-trained with; an average keeps the first checkpoint's),
or, with `composition=` (`--composition SPEC`), that one instead, recorded in the last lineage step too.
The composition is metadata: it is not part of the fingerprint, so the weights and a store encoded with them
are the same whichever is served.

    regrad export --checkpoint run/best --peft adapters/regrad-lora

With `--peft` (`export_peft`) the learner's LoRA is written instead as a standard PEFT adapter folder
(`adapter_config.json` + `adapter_model.safetensors`, no pickle) for its base model, loadable with
`peft.PeftModel.from_pretrained(base, folder)`. The step sizes are not part of a PEFT adapter: the adapter
is the learner with no passage gradients applied (the model behind modes `closed_book` and `rag`).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from offline_tools.errors import UsageError
from offline_tools.training.lineage import Lineage, collect

__all__ = ["EXPORT_DTYPES", "LOG_GZ", "PEFT_FILES", "RUN_RECORD", "export_learner", "export_peft",
           "served_composition", "write_peft_adapter"]

# `models.persistence.WEIGHTS_DTYPES`' names, the default first; spelled out so that the CLI and a recipe's
# dry run check a value without importing torch (tests/cli/test_export.py checks the two agree).
EXPORT_DTYPES = ("float16", "bfloat16", "float32")

RUN_RECORD = ("training_log.jsonl", "training_curves.png", "summary.json", "train_args.json")
LOG = "training_log.jsonl"
LOG_GZ = LOG + ".gz"   # exported logs are gzipped: 5x smaller, and a shipped folder must stay under 5 MB
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")   # what `export_peft` writes


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


def served_composition(spec: str) -> str:
    """`spec` as a learner.json `composition` (`Composition.parse`'s canonical form, e.g. `likelihood:0.2`);
    `UsageError` naming the flag for a bad one."""
    from engine.composition import Composition

    try:
        return str(Composition.parse(spec))
    except ValueError as error:
        raise UsageError(f"--composition {spec}: {error}") from None


def export_learner(checkpoint: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike,
                   weights_dtype: str = EXPORT_DTYPES[0], composition: str | None = None,
                   beams: int | None = None) -> dict:
    """Load `checkpoint` (several: their average), save it to `output` with LoRA weights in `weights_dtype`.

    `composition` (a spec, e.g. `likelihood:0.2`): the exported learner's served default instead of the
    checkpoint's own; checked before anything is loaded or written. `beams` (1..8): the beam width
    it is served with, instead of the checkpoint's own (`models.beam`). Neither is part of the fingerprint.
    Returns a report: the output, its fingerprint, the source fingerprint(s), the served composition, its
    size, the record copied.
    """
    from models import Learner, ModelError

    served = served_composition(composition) if composition is not None else None
    if beams is not None:
        from engine.types import check_beams

        try:
            check_beams(beams, "--beams")
        except ValueError as error:
            raise UsageError(str(error)) from None
    sources = [Path(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else [Path(c) for c in checkpoint]
    output = Path(output)
    for source in sources:
        if output.resolve() == source.resolve():
            raise ModelError(f"--output {output} is the checkpoint folder {source} itself; export into a new folder")
    learner = Learner.load_average(sources)   # one checkpoint: `load`; each one's fingerprint is checked
    source_fingerprints = [Learner.read_meta(s)["fingerprint"] for s in sources]
    lineage = Lineage()
    for source in sources:
        lineage.extend(collect(source, RUN_RECORD))
    if served is not None:
        learner.composition = served
    if beams is not None:
        learner.beams = beams
    learner.save(output, weights_dtype=weights_dtype)
    lineage.add({"kind": "average" if len(sources) > 1 else "export", "fingerprint": learner.fingerprint,
                 "of": source_fingerprints, "weights_dtype": weights_dtype,
                 **({"composition": served} if served is not None else {}),
                 **({"beams": beams} if beams is not None else {})})
    report = {"output": str(output), "weights_dtype": weights_dtype, "fingerprint": learner.fingerprint,
              "sources": [{"checkpoint": str(s), "fingerprint": f} for s, f in zip(sources, source_fingerprints)],
              "composition": learner.composition, "beams": learner.beams,
              "copied": lineage.write(output, learner.fingerprint, _copy)}
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

    from safetensors.torch import save_file

    from models.persistence import WEIGHTS_DTYPES

    dtype = WEIGHTS_DTYPES[weights_dtype]
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
