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
    ray = p.add_argument_group("distributed (needs pip install 'regrad[ray]'; docs/encoding.md)")
    ray.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                     help="encode on a Ray cluster: auto joins a running one or starts a local one; "
                          "ADDRESS is a running cluster's head (host:6379)")
    ray.add_argument("--workers", type=int, default=None,
                     help="with --ray: actors in the pool, one learner (and one GPU, where present) each "
                          "(default 2)")
    ray.add_argument("--parts-dir", default=None, metavar="DIR",
                     help="with --ray: where each worker writes its store part before the merge "
                          "(default STORE.parts; a filesystem every node shares)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.encoding.encode import EncodeArgs
    from offline_tools.errors import UsageError

    fields = EncodeArgs.__dataclass_fields__
    encode_args = EncodeArgs(**{k: v for k, v in vars(args).items() if k in fields})
    if args.ray is None:
        if args.workers is not None or args.parts_dir is not None:
            raise UsageError("--workers and --parts-dir go with --ray auto|ADDRESS")
        from offline_tools.encoding.encode import encode

        print(json.dumps(encode(encode_args)))
        return 0
    from offline_tools.encoding.encode_ray import encode_on_ray

    result = encode_on_ray(encode_args, address=args.ray, workers=2 if args.workers is None else args.workers,
                           parts_dir=args.parts_dir)
    print(json.dumps(result))
    return 0
