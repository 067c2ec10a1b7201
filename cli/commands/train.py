"""`regrad train`: meta-train the learner on augmented files."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="meta-train LoRA + step sizes so one gradient step teaches a passage")
    p.add_argument(
        "--train",
        dest="train_files",
        action="append",
        required=True,
        metavar="AUG.jsonl",
        help="augmented training file (repeatable)",
    )
    p.add_argument(
        "--dev",
        dest="dev_files",
        action="append",
        required=True,
        metavar="AUG.jsonl",
        help="augmented validation file, separate from any reported test split (repeatable)",
    )
    p.add_argument("--output", dest="output_dir", required=True, help="checkpoint folder (best/, last/, logs)")
    p.add_argument("--preset", default="smollm2-135m-instruct")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument(
        "--with-context",
        dest="blind",
        action="store_false",
        help="also put the passages in the prompt (ReGrad + context); default is blind",
    )
    p.add_argument("--meta-batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=4e-4, help="LoRA learning rate (the paper's 4e-4)")
    p.add_argument("--step-size-lr", type=float, default=1e-2,
                   help="learning rate of the step sizes alpha, in their own AdamW group (default 1e-2); "
                        "--step-size-lr 4e-4 is the paper's single-lr setting")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--max-eval-examples", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--first-order", action="store_true",
                   help="first-order meta-gradient (no create_graph): cheaper, but theta then learns an answer "
                        "format, not how to use passage gradients (docs/results.md)")
    p.add_argument("--batch", dest="batched", default="auto", choices=["auto", "on", "off"],
                   help="one batched forward for all passages / prompts of a meta-batch: auto = on a GPU; on a "
                        "CPU one task at a time is faster (padding costs more than batching saves)")
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                   help="bf16 autocast: auto = on a GPU or an AMX CPU (native bf16 matmuls), else off")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.train import TrainArgs, train

    fields = TrainArgs.__dataclass_fields__
    summary = train(TrainArgs(**{k: v for k, v in vars(args).items() if k in fields}))
    print(json.dumps(summary))
    return 0
