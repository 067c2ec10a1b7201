"""`regrad train`: meta-train the learner on augmented files.

The flags are built from `TrainArgs`' fields (offline_tools/training/train.py): each field carries its flag
name, help text and default, so a default lives in one place, and the parsed flags are read back
into `TrainArgs` field by field, so a field and its flag cannot drift apart silently.

`regrad train --recipe FILE` runs a recipe instead (offline_tools/training/recipe.py: the data steps, runs and
averages that build a learner, e.g. checkpoints/regrad-smollm2-135m/recipe.toml); `--dry-run` prints
its commands, each checked against the parser it will run with, and loads no model or data.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import types
import typing

from offline_tools.errors import InputFileError, UsageError
from offline_tools.training.train import TrainArgs  # no torch: the training code imports it where it runs

RECIPE_FLAGS = ("recipe", "dry_run", "overrides", "targets")   # the dests of the flags that are not `TrainArgs` fields


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="meta-train LoRA + step sizes so one gradient step teaches a passage")
    add_train_flags(p)
    recipe = p.add_argument_group("a recipe instead of the flags above (all its runs, with their data and averages)")
    recipe.add_argument("--recipe", metavar="FILE",
                        help="run a recipe's steps in order, skipping the finished ones (a stopped build continues), "
                             "e.g. checkpoints/regrad-smollm2-135m/recipe.toml (make train)")
    recipe.add_argument("--dry-run", action="store_true",
                        help="with --recipe: print each step's command in order and exit; loads no model or data")
    recipe.add_argument("--only", dest="targets", metavar="STEP", action="append", default=[],
                        help="with --recipe: only the steps that STEP needs, and STEP (repeatable), e.g. --only run18 "
                             "for one ablation arm whose warm start is a [learners] folder")
    recipe.add_argument("--set", dest="overrides", metavar="NAME.KEY=VALUE", action="append", default=[],
                        help="with --recipe: override one value of the recipe, e.g. --set run1.steps=20 or "
                             "--set paths.work=artifacts/try (repeatable)")
    p.set_defaults(func=run)


def flag_of(f: dataclasses.Field) -> str:
    """The flag of a `TrainArgs` field: its `flag` metadata, or `--field-name`."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainArgs` field, dest = the field's name; the type and default come from the field,
    booleans are switches that flip the default (`--resume`, `--with-context`). A field without a default
    is required unless --recipe is given (checked in `run`, since argparse cannot say "unless")."""
    hints = typing.get_type_hints(TrainArgs)
    for f in dataclasses.fields(TrainArgs):
        if not f.metadata.get("help", "").strip():
            raise TypeError(f"TrainArgs.{f.name} has no help text (declare it with _option(..., help=...))")
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # `int | None`
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        kwargs = {"dest": f.name, "help": f.metadata["help"], **f.metadata.get("argparse", {})}
        kwargs["default"] = None if f.default is dataclasses.MISSING else f.default
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
    if args.recipe:
        return run_recipe(args)
    if args.dry_run or args.overrides or args.targets:
        raise UsageError("--dry-run, --set and --only go with --recipe FILE")
    missing = [flag_of(f) for f in dataclasses.fields(TrainArgs)
               if f.default is dataclasses.MISSING and getattr(args, f.name) is None]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)} (or --recipe FILE)")
    from offline_tools.training.train import train

    summary = train(train_args_from(args))
    print(json.dumps(summary))
    return 0


def run_recipe(args: argparse.Namespace) -> int:
    """`--recipe FILE`: every command checked first, then printed (`--dry-run`) or run."""
    from offline_tools.training.recipe import format_plan, load_recipe, run_steps

    given = [flag_of(f) for f in dataclasses.fields(TrainArgs)
             if getattr(args, f.name) != (None if f.default is dataclasses.MISSING else f.default)]
    if given:
        raise UsageError(f"--recipe runs the recipe's own `regrad train` commands: {' '.join(given)} cannot be "
                         "given with it; change the recipe, or one value with --set NAME.KEY=VALUE")
    recipe = load_recipe(args.recipe, args.overrides)
    check_commands(recipe)
    steps = recipe.plan(args.targets) if args.targets else recipe.steps
    if args.dry_run:
        print(format_plan(recipe, steps))
        return 0
    run_steps(recipe, steps)
    if args.targets:
        print(json.dumps({"recipe": str(recipe.path), "built": {t: str(recipe.output(t)) for t in args.targets}}))
    else:
        print(json.dumps({"recipe": str(recipe.path), "learner": str(recipe.output(recipe.shipped))}))
    return 0


def check_commands(recipe) -> None:
    """Parse every step's command with the `regrad` parser that will run it (a misspelt flag in the last
    step fails now, not hours later)."""
    from cli.main import build_parser

    parser = build_parser()
    for step in recipe.steps:
        if not step.argv:
            continue
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                parser.parse_args(step.argv)
        except SystemExit:
            problem = (stderr.getvalue().strip().splitlines() or ["invalid arguments"])[-1].split("error: ", 1)[-1]
            raise InputFileError(str(recipe.path), f"step {step.name!r}: `regrad {' '.join(step.argv)}` would fail: "
                                 f"{problem}", step.line) from None
