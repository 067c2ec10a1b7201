"""`regrad train`: meta-train the learner on augmented files.

The flags are built from `TrainArgs`' fields (offline_tools/train.py): each field carries its flag
name, help text and default, so a default lives in one place, and the parsed flags are read back
into `TrainArgs` field by field, so a field and its flag cannot drift apart silently.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

from offline_tools.train import TrainArgs  # no torch: the training code imports it where it runs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="meta-train LoRA + step sizes so one gradient step teaches a passage")
    add_train_flags(p)
    p.set_defaults(func=run)


def flag_of(f: dataclasses.Field) -> str:
    """The flag of a `TrainArgs` field: its `flag` metadata, or `--field-name`."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainArgs` field, dest = the field's name; the type, default and required-ness come
    from the field, booleans are switches that flip the default (`--resume`, `--with-context`)."""
    hints = typing.get_type_hints(TrainArgs)
    for f in dataclasses.fields(TrainArgs):
        if not f.metadata.get("help", "").strip():
            raise TypeError(f"TrainArgs.{f.name} has no help text (declare it with _option(..., help=...))")
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # `int | None`
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        kwargs = {"dest": f.name, "help": f.metadata["help"], **f.metadata.get("argparse", {})}
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if kind is bool:
            kwargs["action"] = "store_false" if f.default else "store_true"
        elif typing.get_origin(kind) is list:
            kwargs.update(action="append", type=typing.get_args(kind)[0])
        else:
            kwargs["type"] = kind
        parser.add_argument(flag_of(f), **kwargs)


def train_args_from(args: argparse.Namespace) -> TrainArgs:
    """`TrainArgs` of the parsed flags, every field by name (validated by `TrainArgs.__post_init__`)."""
    return TrainArgs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainArgs)})


def run(args: argparse.Namespace) -> int:
    from offline_tools.train import train

    summary = train(train_args_from(args))
    print(json.dumps(summary))
    return 0
