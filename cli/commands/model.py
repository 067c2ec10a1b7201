"""`regrad model prepare [--model NAME]`: make the base model available as a local HF folder."""

from __future__ import annotations

import argparse

from models.config import BUNDLED_MODEL


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="prepare the base model (bundled SmolLM2 by default)")
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True,
                                    help="what to do with the bundled model")
    prepare = actions.add_parser("prepare", help="convert the bundled GGUF once into a safetensors folder")
    prepare.add_argument("--model", default=BUNDLED_MODEL, help=f"model name or folder (default {BUNDLED_MODEL})")
    prepare.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models import prepare_model

    print(prepare_model(args.model))  # the folder path is the last line, for scripts
    return 0
