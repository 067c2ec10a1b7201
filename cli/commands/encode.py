"""`regrad encode`: write per-passage gradients of a trained learner into a gradient store."""

from __future__ import annotations

import argparse
import json

# gradient_store.CODECS' names, spelt out: building the parser must not import torch (a test keeps them equal).
CODEC_CHOICES = ["bf16", "fp32", "int8", "lowrank4"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("encode", help="compute passage gradients into a gradient store (resumable)")
    p.add_argument("--checkpoint", required=True, help="learner folder (learner.json + learner.safetensors)")
    p.add_argument("--store", required=True, help="gradient store folder (created if missing)")
    p.add_argument(
        "--passages-from",
        action="append",
        default=[],
        metavar="AUG.jsonl",
        help="encode the passages these augmented files reference (repeatable)",
    )
    p.add_argument(
        "--corpus",
        action="append",
        default=[],
        metavar="FILE",
        help="encode every passage of a corpus file (same ids as `regrad index`; repeatable)",
    )
    p.add_argument("--format", dest="corpus_format", default="auto", help="corpus format (as for `regrad index`)")
    p.add_argument("--top-k", type=int, default=None, help="with --passages-from: first k passages per question")
    p.add_argument("--codec", default="bf16", choices=CODEC_CHOICES,
                   help="how gradients are stored: bf16 (default), fp32, int8 (blocks of 256), lowrank4 (each "
                   "LoRA tensor at rank 4, int8 factors: ~1/8 of bf16)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="passages per backward (default: 16 on a GPU, 1 on a CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where gradients are computed (default auto: cuda when available)")
    p.add_argument("--limit", type=int, default=None, help="encode at most N new passages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.encode import EncodeArgs, encode

    fields = EncodeArgs.__dataclass_fields__
    print(json.dumps(encode(EncodeArgs(**{k: v for k, v in vars(args).items() if k in fields}))))
    return 0
