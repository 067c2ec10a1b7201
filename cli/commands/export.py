"""`regrad export`: a trained learner in a folder of its own (float16 LoRA), or its LoRA as a PEFT adapter."""

from __future__ import annotations

import argparse
import json

from offline_tools.errors import UsageError
from offline_tools.training.export import EXPORT_DTYPES

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="copy a trained learner (or the average of several) into a folder of its own, float16, "
        "or write its LoRA as a PEFT adapter (--peft)",
        description="Load a learner checkpoint, save it into --output (LoRA weights in --weights-dtype, rounded "
        "first, so the recorded fingerprint is that of the saved weights) and copy the run's training log, "
        "curves, summary and arguments found beside it. Several --checkpoint of one preset: export their "
        "uniform average (a model soup). The lineage goes along, flat: lineage.json lists every run, warm start "
        "and average that made the learner, each run's record in runs/<fingerprint[:12]>/. "
        "Encode gradient stores with the exported learner. "
        "With --peft DIR instead of --output: write the learner's LoRA as a standard PEFT adapter folder "
        "(adapter_config.json + adapter_model.safetensors, no pickle) for its base model, loadable with "
        "peft.PeftModel.from_pretrained(base, DIR). The learned step sizes are not part of a PEFT adapter: "
        "the adapter is the learner with no passage gradients applied (modes closed_book and rag). "
        "Several --checkpoint are averaged there too. "
        "--composition SPEC: the learner's served default composition, instead of the checkpoint's own.",
    )
    p.add_argument("--checkpoint", required=True, action="append",
                   help="learner folder to export, e.g. run/best; repeat to average several runs")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", help="folder to write (learner.safetensors + learner.json + run record)")
    target.add_argument("--peft", metavar="DIR",
                        help="new or empty folder to write the LoRA into as a PEFT adapter (no step sizes)")
    p.add_argument("--composition", metavar="SPEC",
                   help="with --output: the exported learner's served default composition (learner.json "
                   "`composition`): sum, softmax[:T] or likelihood[:T], e.g. likelihood:0.2; default: the "
                   "checkpoint's own (the first --checkpoint's for an average). Metadata, not part of the "
                   "fingerprint; recorded in lineage.json's last step")
    p.add_argument("--beams", type=int, metavar="W",
                   help="with --output: the beam width the exported learner is served with (learner.json `beams`, "
                   "1 = greedy); default: the checkpoint's own. Metadata, not part of the fingerprint")
    p.add_argument("--weights-dtype", default=None, choices=EXPORT_DTYPES,
                   help="dtype of the stored LoRA tensors (default: float16 for --output, where step sizes "
                   "stay float32; float32 for --peft). float16 takes bfloat16's bytes and rounds 8x less; "
                   "bfloat16 holds values beyond float16's ±65504, which float16 refuses, writing nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.training.export import export_learner, export_peft

    if args.composition is not None and args.peft is not None:
        raise UsageError("--composition sets an --output learner's served default; a PEFT adapter has none")
    if args.beams is not None and args.peft is not None:
        raise UsageError("--beams sets an --output learner's served default; a PEFT adapter has none")
    if args.peft is not None:
        report = export_peft(args.checkpoint, args.peft, args.weights_dtype or "float32")
    else:
        report = export_learner(args.checkpoint, args.output, args.weights_dtype or EXPORT_DTYPES[0], args.composition,
                                args.beams)
    print(json.dumps(report))
    return 0
