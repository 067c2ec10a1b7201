"""`regrad export`: a trained learner in a folder of its own, optionally with bf16 LoRA weights."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="copy a trained learner (or the average of several) into a folder of its own, bf16",
        description="Load a learner checkpoint, save it into --output (LoRA weights in --weights-dtype, rounded "
        "first, so the recorded fingerprint is that of the saved weights) and copy the run's training log, "
        "curves, summary and arguments found beside it. Several --checkpoint of one preset: export their "
        "uniform average (a model soup), each run's record in runs/<i>/ and the sources in soup.json. "
        "Encode gradient stores with the exported learner.",
    )
    p.add_argument("--checkpoint", required=True, action="append",
                   help="learner folder to export, e.g. run/best; repeat to average several runs")
    p.add_argument("--output", required=True, help="folder to write (learner.safetensors + learner.json + run record)")
    p.add_argument("--weights-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="dtype of the stored LoRA tensors (default bfloat16; step sizes stay float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.export import export_learner

    print(json.dumps(export_learner(args.checkpoint, args.output, args.weights_dtype)))
    return 0
