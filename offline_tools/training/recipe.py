"""Recipes: how a learner is built, as data (`regrad train --recipe FILE [--dry-run] [--only STEP]`).

A recipe is a TOML file; `checkpoints/regrad-smollm2-135m/recipe.toml` builds the shipped learner.

    shipped = "NAME"              the step whose output is the learner the recipe builds
    [paths] work, data            outputs go in `work`, [data] files are in `data`; "${VAR:-default}"
                                  reads the environment; relative paths are from the current directory
    [data] NAME = "PATH"          input files in the data folder
    [learners] NAME = "PATH"      learner folders that exist already (what `regrad export` writes, e.g. the
                                  shipped learner), relative to the current directory: a run may start from
                                  one (init_from) and an export average it, so an ablation arm warm-starts
                                  from the shipped learner without rebuilding its lineage
    [train] OPTION = VALUE        `regrad train` options every run shares (`TrainArgs` field names)
    [[step]] kind, name, output, title?, ...     one per step, in the order they run:
      synth    `regrad synth --output OUTPUT`; every other key is its flag (`avoid` = synth steps)
      index    `regrad index`, corpora = data entries or synth steps (their corpus.jsonl)
      augment  `regrad augment`: dataset, source (a data entry or synth step), split, index, top_k = 3,
               answerable = true (`--answerable`: only questions with a gold answer in their passages)
      mix      the lines of parts = [{from, skip?, answer?, repeat | head | tail | sample}] in order, shuffled
               if shuffle = SEED (skip = N: leave out a file's first N lines first, e.g. skip = 840, head = 1260;
               answer = "no": only the lines whose first gold answer is that, in any case, e.g. to balance a
               mix's yes/no questions; sample = N: N lines drawn with random.Random(SEED), which then
               shuffles the whole); with
               into = MIX and replacing = [ID PREFIXES], the shuffled lines go in place of as many of MIX's
               lines whose id starts so, drawn with the same generator (the rest of MIX, order included, kept)
      train    `regrad train`: train, dev (mixes, augments or data entries), steps, extend_to (then
               --resume to that many steps), init_from (a run, meaning its best/, an export or a
               [learners] entry), and
               any `TrainArgs` option
      export   `regrad export`: checkpoints = runs, exports or [learners], averaged when several (a run means its
               best/, "RUN/last" its last/ state); composition = SPEC
               (`--composition`: the learner's served default, e.g. "likelihood:0.2"; default its own);
               beams = W (`--beams`: the beam width it is served with, 1 = greedy; default its own);
               weights_dtype = "float16" | "bfloat16" | "float32" (`--weights-dtype`; default `regrad
               export`'s, float16; the shipped recipe names bfloat16, what its learners were exported in)

Steps refer to earlier steps (and [data] entries) by name. A step whose output is there is skipped,
so a stopped build continues where it stopped: a run whose last/ state has fewer steps than asked
goes on with `--resume`; `regrad augment` skips the questions already in its output by itself.

Example:
    recipe = load_recipe("checkpoints/regrad-smollm2-135m/recipe.toml", overrides=["run1.steps=20"])
    print(format_plan(recipe, recipe.steps))   # what `--dry-run` prints
    run_steps(recipe, recipe.plan(["synth_test"]))   # only what one output needs
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import subprocess
import sys
import tomllib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.composition import Composition
from offline_tools.errors import InputFileError, RegradError, UsageError
from offline_tools.files import atomic_text
from offline_tools.training.export import EXPORT_DTYPES
from offline_tools.training.train import TrainArgs  # its options, not the training code: no torch

__all__ = ["Recipe", "Step", "MixPart", "load_recipe", "format_plan", "run_steps", "KINDS"]

KINDS = ("synth", "index", "augment", "mix", "train", "export")
INDEX_DONE = ".recipe-done"   # written in an index folder once `regrad index` finished
OLD_INDEX_DONE = ".demo-done"  # what the demo wrote before recipes: work folders built then are reused
COMMON_KEYS = {"kind", "name", "title", "output"}
STEP_KEYS = {   # the keys of each kind besides COMMON_KEYS; synth takes any other key as its flag
    "synth": {"avoid"},
    "index": {"corpora"},
    "augment": {"dataset", "source", "split", "index", "top_k", "answerable"},
    "mix": {"parts", "shuffle", "into", "replacing"},
    "train": {"train", "dev", "steps", "extend_to", "init_from"},
    "export": {"checkpoints", "composition", "beams", "weights_dtype"},
}
PART_TAKES = {"repeat", "head", "tail", "sample"}   # what a mix part takes of its file: at most one (and skip)
# `TrainArgs` fields a recipe sets through its own keys (train, dev, output, steps, init_from).
RUN_FIELDS = {"output_dir", "train_files", "dev_files", "max_steps", "init_from", "resume"}
TRAIN_OPTIONS = {f.name: f for f in dataclasses.fields(TrainArgs) if f.name not in RUN_FIELDS}
_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")   # ${VAR} or ${VAR:-default}


@dataclass
class MixPart:
    """Lines of one file in a mix: all of them `repeat` times, or the first `head` / last `tail`, or
    `sample` drawn with the mix's generator; with `skip`, of the file less its first `skip` lines; with
    `answer`, of those whose first gold answer is `answer` (case-insensitive) only."""

    path: Path
    repeat: int = 1
    head: int | None = None
    tail: int | None = None
    skip: int = 0
    sample: int | None = None
    answer: str | None = None

    def lines(self, rng: random.Random | None = None) -> list[str]:
        lines = self.path.read_text().splitlines()[self.skip:]
        if self.answer is not None:
            wanted = self.answer.casefold()
            lines = [line for i, line in enumerate(lines) if _first_answer(self.path, i + self.skip, line) == wanted]
        if self.sample is not None:
            if self.sample > len(lines):
                raise InputFileError(self.path, f"has {len(lines)} lines to sample from, not {self.sample}")
            return rng.sample(lines, self.sample)
        if self.head is not None:
            return lines[: self.head]
        if self.tail is not None:
            return lines[-self.tail:] if self.tail else []
        return lines * self.repeat

    def describe(self) -> str:
        skip = (f"skip {self.skip}, " if self.skip else "") + (f"answer {self.answer!r}, " if self.answer else "")
        if self.sample is not None:
            return f"{skip}sample {self.sample} of {self.path}"
        if self.head is not None:
            return f"{skip}head {self.head} of {self.path}"
        if self.tail is not None:
            return f"{skip}tail {self.tail} of {self.path}"
        return (f"{skip}all of " if skip else "") + f"{self.path}" + (f" x{self.repeat}" if self.repeat != 1 else "")


@dataclass
class Step:
    """One step of a plan: a `regrad` command (a mix: lines written here) and the output that marks it done."""

    kind: str
    name: str
    output: Path
    argv: list[str] = field(default_factory=list)   # `regrad ARGV`; empty for a mix
    title: str = ""
    needs: list[str] = field(default_factory=list)   # names of the steps and data entries it reads
    parts: list[MixPart] = field(default_factory=list)   # a mix's
    shuffle: int | None = None                            # a mix's random.Random seed
    into: Path | None = None                              # a mix whose lines this one's replace ...
    replacing: tuple[str, ...] = ()                       # ... where their id starts with one of these
    steps: int = 0                                        # a run's length
    line: int | None = None                               # of its [[step]] in the recipe, for errors

    def is_done(self) -> bool:
        """Whether the output says this step finished (an augment resumes by itself: never skipped)."""
        if self.kind == "synth":
            return (self.output / "synth.json").is_file()
        if self.kind == "index":
            return (self.output / INDEX_DONE).is_file() or (self.output / OLD_INDEX_DONE).is_file()
        if self.kind == "mix":
            return self.output.is_file()
        if self.kind == "train":
            summary = self.output / "summary.json"
            return summary.is_file() and json.loads(summary.read_text()).get("steps", 0) >= self.steps
        if self.kind == "export":
            # lineage.json is written last; soup.json is what a work folder built by an earlier export holds
            return (self.output / "learner.json").is_file() and any(
                (self.output / name).is_file() for name in ("lineage.json", "soup.json"))
        return False

    def command(self) -> list[str]:
        """The arguments as they would run now: a run with a saved state continues it with --resume."""
        has_state = (self.output / "last" / "trainer_state.json").is_file()
        if self.kind == "train" and has_state and "--resume" not in self.argv:
            return [*self.argv, "--resume"]
        return self.argv

    def describe(self) -> str:
        """One line: `regrad ...` as a user would type it, or what a mix writes."""
        if self.kind == "mix":
            shuffled = f", shuffled with random.Random({self.shuffle})" if self.shuffle is not None else ""
            into = (f", in place of lines of {self.into} whose id starts with {' or '.join(self.replacing)}"
                    if self.into is not None else "")
            return f"(mix) {self.output} <- {' + '.join(p.describe() for p in self.parts)}{shuffled}{into}"
        return "regrad " + " ".join(self.command())

    def write_mix(self) -> None:
        rng = random.Random(self.shuffle) if self.shuffle is not None else None
        lines = [line for part in self.parts for line in part.lines(rng)]
        if rng is not None:
            rng.shuffle(lines)
        if self.into is not None:
            lines = _in_place(self.into, lines, self.replacing, rng)
        with atomic_text(self.output) as f:
            f.write("\n".join(lines) + "\n")


def _record(path: Path, index: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise InputFileError(path, "is not a JSON object with an id", line=index + 1)
    return record


def _first_answer(path: Path, index: int, line: str) -> str | None:
    """A line's first gold answer, case-folded (None: it has none)."""
    answers = _record(path, index, line).get("answers")
    return str(answers[0]).casefold() if isinstance(answers, list) and answers else None


def _in_place(base_path: Path, lines: list[str], prefixes: tuple[str, ...], rng: random.Random) -> list[str]:
    """`base_path`'s lines with `lines` in place of as many of those whose id starts with a prefix."""
    base = base_path.read_text().splitlines()
    slots = [i for i, line in enumerate(base) if str(_record(base_path, i, line).get("id", "")).startswith(prefixes)]
    if len(slots) < len(lines):
        raise InputFileError(base_path, f"has {len(slots)} lines whose id starts with {' or '.join(prefixes)}, "
                                        f"fewer than the {len(lines)} to put in their place")
    for i, line in zip(sorted(rng.sample(slots, len(lines))), lines):
        base[i] = line
    return base


@dataclass
class Recipe:
    """A loaded, validated recipe: its steps in order, with every path resolved."""

    path: Path
    work: Path
    data: Path
    inputs: dict[str, Path]   # [data] entries
    steps: list[Step]
    shipped: str              # the name of the step that writes the learner

    def step(self, name: str) -> Step:
        """The step named `name` (a run extended by --resume: its extension, the later of its two)."""
        found = [s for s in self.steps if s.name == name]
        if not found:
            raise InputFileError(str(self.path), f"no step named {name!r}; steps: "
                                 f"{', '.join(dict.fromkeys(s.name for s in self.steps))}")
        return found[-1]

    def output(self, name: str) -> Path:
        """Where a step (or data entry) named `name` writes (lies)."""
        return self.inputs[name] if name in self.inputs else self.step(name).output

    def plan(self, targets: Iterable[str] | None = None) -> list[Step]:
        """The steps that build `targets` (step names; default: all), in recipe order."""
        if targets is None:
            return list(self.steps)
        wanted, todo = set(), [self.step(t).name for t in targets]
        while todo:
            name = todo.pop()
            if name in wanted or name in self.inputs:
                continue
            wanted.add(name)
            todo += [n for s in self.steps if s.name == name for n in s.needs]
        return [s for s in self.steps if s.name in wanted]


# ------------------------------------------------------------------------------------------ loading
def load_recipe(path: str | os.PathLike, overrides: Iterable[str] = (), base: str | os.PathLike = "") -> Recipe:
    """Read a recipe, apply `overrides` (`NAME.KEY=VALUE`, as `--set`), validate it and resolve its paths.

    Relative paths are resolved against `base` (default: the current directory; paths stay relative).
    Raises `InputFileError` naming the file, the line and the key of a bad value, and `UsageError`
    for a bad override.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputFileError(str(path), f"cannot read the recipe: {e.strerror or e}") from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputFileError(str(path), f"not valid TOML: {e}") from e
    for override in overrides:
        _apply_override(raw, override)
    return _Loader(path, text, Path(base)).load(raw)


def _apply_override(raw: dict, override: str) -> None:
    """`NAME.KEY=VALUE` sets KEY of the step (or top-level table) NAME; `KEY=VALUE` a top-level key.
    VALUE is read as a TOML value (20, 2e-4, true, ["a", "b"]), else taken as a string."""
    target, sep, text = override.partition("=")
    name, _, key = target.strip().rpartition(".")
    if not sep or not key:
        raise UsageError(f"--set {override!r}: expected NAME.KEY=VALUE, e.g. --set run1.steps=20")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if not name:
        raw[key] = value
        return
    steps = [s for s in raw.get("step", []) if isinstance(s, dict)]
    table = next((s for s in steps if s.get("name") == name), raw.get(name))
    if not isinstance(table, dict):
        known = ", ".join(str(s.get("name")) for s in steps)
        raise UsageError(f"--set {override!r}: no step or table named {name!r} (steps: {known})")
    table[key] = value


class _Loader:
    """Checks the TOML top to bottom and builds the steps; a step may only name what comes before it."""

    def __init__(self, path: Path, text: str, base: Path) -> None:
        self.path, self.lines, self.base = path, text.splitlines(), base
        self.kinds: dict[str, str] = {}   # name -> step kind, "data" for a [data] entry, "learner" for [learners]
        self.inputs: dict[str, Path] = {}
        self.steps: list[Step] = []
        self.index = -1                   # the [[step]] being read, for error lines

    # -- errors name the file, the line and the key
    def _line(self, key: str | None, table: str | None) -> int | None:
        """The line of `key` in `[table]` (the current `[[step]]` for table "step"), else of the header."""
        if table is None:   # a top-level key or table
            pattern = rf"^\s*(\[\[?\s*{re.escape(key or '')}\s*\]\]?|{re.escape(key or '')}\s*=)"
            return next((i + 1 for i, line in enumerate(self.lines) if re.match(pattern, line)), None)
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
        starts = [i for i, line in enumerate(self.lines) if header.match(line)]
        nth = self.index if table == "step" else 0
        if not 0 <= nth < len(starts):
            return None
        for i in range(starts[nth] + 1, len(self.lines)):
            if self.lines[i].lstrip().startswith("["):
                break
            if key and re.match(rf"^\s*{re.escape(key)}\s*=", self.lines[i]):
                return i + 1
        return starts[nth] + 1

    def error(self, message: str, key: str | None = None, table: str | None = "step") -> InputFileError:
        return InputFileError(str(self.path), message, self._line(key, table))

    # -- the file
    def load(self, raw: dict) -> Recipe:
        for key in raw:
            if key not in ("shipped", "paths", "data", "learners", "train", "step"):
                raise self.error(f"unknown top-level key {key!r}; a recipe has shipped, [paths], [data], [learners], "
                                 "[train] and [[step]]", key, None)
        paths = self._table(raw, "paths")
        work = self._path(paths, "work")
        data = self._path(paths, "data") if raw.get("data") else self.base
        for name, value in self._table(raw, "data").items():
            if not isinstance(value, str):
                raise self.error(f"[data] {name} = {value!r} must be a path (in the data folder)", name, "data")
            self.inputs[name], self.kinds[name] = data / value, "data"
        for name, value in self._table(raw, "learners").items():
            if name in self.kinds:
                raise self.error(f"[learners] {name}: the name is already a [data] entry", name, "learners")
            if not isinstance(value, str) or not value:
                raise self.error(f"[learners] {name} = {value!r} must be a path (a learner folder)", name, "learners")
            folder = self.base / value
            if not (folder / "learner.json").is_file():
                raise self.error(f"[learners] {name} = {value!r}: no learner.json in {folder} (a folder `regrad "
                                 "export` wrote, e.g. checkpoints/regrad-smollm2-135m)", name, "learners")
            self.inputs[name], self.kinds[name] = folder, "learner"
        self.train_options = self._table(raw, "train")
        for key, value in self.train_options.items():
            self._check_train_option(key, value, "[train]", "train")
        tables = raw.get("step")
        if not isinstance(tables, list) or not tables:
            raise self.error("no [[step]] tables: a recipe is its steps, in the order they run", None, None)
        for self.index, table in enumerate(tables):
            self._add_step(table, work)
        shipped = raw.get("shipped")
        if self.kinds.get(shipped) not in ("train", "export"):
            raise self.error(f"shipped = {shipped!r} must name a train or export step (the learner the recipe builds)",
                             "shipped", None)
        return Recipe(self.path, work, data, self.inputs, self.steps, shipped)

    def _table(self, raw: dict, name: str) -> dict:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise self.error(f"{name} must be a table ([{name}])", name, None)
        return value

    def _path(self, paths: dict, key: str) -> Path:
        value = paths.get(key)
        if not isinstance(value, str) or not value:
            raise self.error(f"[paths] needs {key} = \"FOLDER\"", key, "paths")

        def environment(match: re.Match) -> str:
            value = os.environ.get(match[1]) or match[2]
            if value is None:
                raise self.error(f"[paths] {key}: ${{{match[1]}}} is not set; give a default: "
                                 f"${{{match[1]}:-FOLDER}}", key, "paths")
            return value

        return self.base / _ENV.sub(environment, value)

    def _check_train_option(self, key: str, value: Any, where: str, table: str = "step") -> None:
        if key not in TRAIN_OPTIONS:
            raise self.error(f"{where}: {key!r} is not a `regrad train` option a recipe sets; known: "
                             f"{', '.join(TRAIN_OPTIONS)}", key, table)
        hint = typing.get_type_hints(TrainArgs)[key]
        types = tuple(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
        types += (int,) if float in types else ()
        lists = [typing.get_args(t)[0] for t in types if typing.get_origin(t) is list]
        if lists:   # e.g. task_k = [1, 3, 5]
            if not (isinstance(value, list) and value
                    and all(isinstance(v, lists[0]) and not isinstance(v, bool) for v in value)):
                raise self.error(f"{where}: {key} = {value!r} must be a list of {lists[0].__name__}", key, table)
            return
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            raise self.error(f"{where}: {key} = {value!r} must be {' or '.join(t.__name__ for t in types)}", key, table)

    # -- one step
    def _add_step(self, table: Any, work: Path) -> None:
        if not isinstance(table, dict):
            raise self.error(f"step {self.index + 1} must be a table")
        kind, name = table.get("kind"), table.get("name")
        if kind not in KINDS:
            raise self.error(f"step {self.index + 1}: kind = {kind!r} is not a step kind; known: {', '.join(KINDS)}",
                             "kind")
        if not isinstance(name, str) or not name:
            raise self.error(f"step {self.index + 1} ({kind}) needs name = \"...\" (how later steps refer to it)",
                             "name")
        if name in self.kinds:
            raise self.error(f"step {name!r}: the name is already used by an earlier step, [data] or [learners] "
                             "entry", "name")
        allowed = COMMON_KEYS | STEP_KEYS[kind] | (set(TRAIN_OPTIONS) if kind == "train" else set())
        unknown = [key for key in table if key not in allowed and kind != "synth"]
        if unknown:
            raise self.error(f"step {name!r}: unknown key {unknown[0]!r} for a {kind} step; known: "
                             f"{', '.join(sorted(allowed))}", unknown[0])
        output = table.get("output")
        if not isinstance(output, str) or not output:
            raise self.error(f"step {name!r} needs output = \"PATH\" (in the work folder)", "output")
        if any(s.output == work / output for s in self.steps):
            raise self.error(f"step {name!r}: output {output!r} is written by an earlier step too", "output")
        step = Step(kind, name, work / output, title=str(table.get("title", "")), line=self._line(None, "step"))
        self.steps += getattr(self, f"_{kind}")(step, table)
        self.kinds[name] = kind

    def _ref(self, step: Step, key: str, name: Any, kinds: tuple[str, ...]) -> Path:
        """The path of the earlier step or [data] entry `name` (the value of `key`), as `step` reads it: a
        run means its best/, and "RUN/last" its last/ state (the candidate where best/ stayed step 0)."""
        state = "best"
        if isinstance(name, str) and name.endswith("/last") and "train" in kinds \
                and self.kinds.get(name.removesuffix("/last")) == "train":
            name, state = name.removesuffix("/last"), "last"
        if self.kinds.get(name) not in kinds:
            found = "is not defined before this step" if name not in self.kinds else f"is a {self.kinds[name]}"
            known = ", ".join(n for n, k in self.kinds.items() if k in kinds) or "none"
            raise self.error(f"step {step.name!r}: {key} = {name!r} {found}; it must name an earlier "
                             f"{' or '.join(kinds)} ({known})", key)
        step.needs.append(name)
        if name in self.inputs:
            return self.inputs[name]
        earlier = next(s for s in self.steps if s.name == name)
        if earlier.kind == "synth" and key == "corpora":
            return earlier.output / "corpus.jsonl"
        return earlier.output / state if earlier.kind == "train" else earlier.output

    def _refs(self, step: Step, table: dict, key: str, kinds: tuple[str, ...]) -> list[Path]:
        names = table.get(key)
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names:
            raise self.error(f"step {step.name!r} needs {key} = [names of earlier {' or '.join(kinds)} steps]", key)
        return [self._ref(step, key, name, kinds) for name in names]

    def _int(self, step: Step, table: dict, key: str, default: int | None = None, least: int = 0) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise self.error(f"step {step.name!r}: {key} = {value!r} must be an integer >= {least}", key)
        return value

    def _string(self, step: Step, table: dict, key: str) -> str:
        if not isinstance(table.get(key), str):
            raise self.error(f"step {step.name!r} needs {key} = \"...\"", key)
        return table[key]

    # -- the kinds: each returns its steps (a run extended by --resume is two)
    def _synth(self, step: Step, table: dict) -> list[Step]:
        step.argv = ["synth", "--output", str(step.output)]
        for key, value in table.items():   # every other key is a flag, in the order written
            flag = "--" + key.replace("_", "-")
            if key in COMMON_KEYS or value is False:
                continue
            if key == "avoid":
                step.argv += [a for folder in self._refs(step, table, key, ("synth",)) for a in (flag, str(folder))]
            elif value is True:
                step.argv.append(flag)
            elif isinstance(value, (int, float, str)):
                step.argv += [flag, str(value)]
            else:
                raise self.error(f"step {step.name!r}: {key} = {value!r} must be a number, a string or a boolean "
                                 "(a `regrad synth` flag)", key)
        return [step]

    def _index(self, step: Step, table: dict) -> list[Step]:
        corpora = self._refs(step, table, "corpora", ("data", "synth"))
        step.argv = ["index", *(a for c in corpora for a in ("--corpus", str(c))), "--index", str(step.output),
                     "--no-progress"]
        return [step]

    def _augment(self, step: Step, table: dict) -> list[Step]:
        dataset, split = self._string(step, table, "dataset"), self._string(step, table, "split")
        source = self._ref(step, "source", table.get("source"), ("data", "synth"))
        index = self._ref(step, "index", table.get("index"), ("index",))
        step.argv = ["augment", "--dataset", dataset, "--data-path", str(source), "--index", str(index), "--split",
                     split, "--top-k", str(self._int(step, table, "top_k", 3, least=1)), "--output", str(step.output),
                     "--no-progress"]
        answerable = table.get("answerable", False)
        if not isinstance(answerable, bool):
            raise self.error(f"step {step.name!r}: answerable = {answerable!r} must be true or false", "answerable")
        if answerable:
            step.argv.append("--answerable")
        return [step]

    def _mix(self, step: Step, table: dict) -> list[Step]:
        parts = table.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise self.error(f"step {step.name!r} needs parts = [{{ from = \"NAME\" }}, ...]", "parts")
        for part in parts:
            if set(part) - {"from", "skip", "answer", *PART_TAKES} or len(set(part) & PART_TAKES) > 1:
                raise self.error(f"step {step.name!r}: a part is {{ from = NAME }} with at most one of repeat, head, "
                                 f"tail or sample (and skip, answer), not {part}", "parts")
            if "answer" in part and not (isinstance(part["answer"], str) and part["answer"].strip()):
                raise self.error(f"step {step.name!r}: a part's answer is a gold answer such as \"no\", not "
                                 f"{part['answer']!r}", "parts")
            path = self._ref(step, "parts", part.get("from"), ("augment", "mix", "data"))
            step.parts.append(MixPart(path, self._int(step, part, "repeat", 1, least=1),
                                      self._int(step, part, "head") if "head" in part else None,
                                      self._int(step, part, "tail") if "tail" in part else None,
                                      self._int(step, part, "skip", 0),
                                      self._int(step, part, "sample") if "sample" in part else None,
                                      part.get("answer")))
        step.shuffle = self._int(step, table, "shuffle") if "shuffle" in table else None
        sampled = any(p.sample is not None for p in step.parts)
        if (sampled or "into" in table) and step.shuffle is None:
            raise self.error(f"step {step.name!r}: sample and into draw with random.Random(shuffle); add shuffle = "
                             "SEED", "shuffle" if "shuffle" in table else "parts")
        if ("into" in table) != ("replacing" in table):
            raise self.error(f"step {step.name!r}: into = \"MIX\" and replacing = [\"ID PREFIX\", ...] go together",
                             "into" if "into" in table else "replacing")
        if "into" in table:
            step.into = self._ref(step, "into", table["into"], ("mix", "augment", "data"))
            replacing = table["replacing"]
            if not isinstance(replacing, list) or not replacing or not all(
                    isinstance(p, str) and p for p in replacing):
                raise self.error(f"step {step.name!r}: replacing = [\"ID PREFIX\", ...], not {replacing!r}",
                                 "replacing")
            step.replacing = tuple(replacing)
        return [step]

    def _train(self, step: Step, table: dict) -> list[Step]:
        options = {key: value for key, value in table.items() if key in TRAIN_OPTIONS}
        for key, value in options.items():
            self._check_train_option(key, value, f"step {step.name!r}")
        options = {**self.train_options, **options}
        train = self._refs(step, table, "train", ("mix", "augment", "data"))
        dev = self._refs(step, table, "dev", ("mix", "augment", "data"))
        init_from = (self._ref(step, "init_from", table["init_from"], ("train", "export", "learner"))
                     if "init_from" in table else None)
        step.steps = self._int(step, table, "steps", least=1)
        extend_to = self._int(step, table, "extend_to", 0)
        named = {"train_files": [str(p) for p in train], "dev_files": [str(p) for p in dev],
                 "output_dir": str(step.output), "max_steps": step.steps, **options}
        if init_from:
            named["init_from"] = str(init_from)
        try:
            TrainArgs(**named)   # the values `regrad train` would refuse, refused now
        except UsageError as e:
            raise self.error(f"step {step.name!r}: {e}") from e
        step.argv = ["train", *_train_flags(named)]
        if options.get("stop_after") is not None:   # a run cut short: done once it has run that far
            if extend_to:
                raise self.error(f"step {step.name!r}: stop_after and extend_to do not go together (resume the cut "
                                 "run with a step of its own)", "stop_after")
            step.steps = min(step.steps, options["stop_after"])
        if extend_to <= step.steps:
            return [step]
        # The same run resumed from its last/ state (optimizer included), the schedule now spanning extend_to.
        extended = dataclasses.replace(step, title="", steps=extend_to, needs=list(step.needs),
                                       argv=["train", *_train_flags({**named, "max_steps": extend_to}), "--resume"])
        return [step, extended]

    def _export(self, step: Step, table: dict) -> list[Step]:
        checkpoints = self._refs(step, table, "checkpoints", ("train", "export", "learner"))
        step.argv = ["export", *(a for c in checkpoints for a in ("--checkpoint", str(c))), "--output",
                     str(step.output)]
        if "composition" in table:   # the learner's served default, checked as `regrad export` checks it
            spec = self._string(step, table, "composition")
            try:
                Composition.parse(spec)
            except ValueError as error:
                raise self.error(f"step {step.name!r}: composition = {spec!r}: {error}", "composition") from None
            step.argv += ["--composition", spec]
        if "beams" in table:
            from engine.types import check_beams

            width = self._int(step, table, "beams")
            try:
                check_beams(width, "beams =")
            except ValueError as error:
                raise self.error(f"step {step.name!r}: {error}", "beams") from None
            step.argv += ["--beams", str(width)]
        if "weights_dtype" in table:
            dtype = self._string(step, table, "weights_dtype")
            if dtype not in EXPORT_DTYPES:
                raise self.error(f"step {step.name!r}: weights_dtype = {dtype!r}: must be one of "
                                 f"{', '.join(EXPORT_DTYPES)}", "weights_dtype")
            step.argv += ["--weights-dtype", dtype]
        return [step]


def _train_flags(named: dict[str, Any]) -> list[str]:
    """`regrad train` flags for the options a recipe names: --train, --dev, --output, then the rest in
    `TrainArgs` order (a boolean is its switch when it differs from the default)."""
    fields = {f.name: f for f in dataclasses.fields(TrainArgs)}
    order = ["train_files", "dev_files", "output_dir", *(name for name in fields if name in named)]
    flags: list[str] = []
    for name in dict.fromkeys(order):
        f, value = fields[name], named[name]
        flag = f.metadata.get("flag") or "--" + name.replace("_", "-")
        if isinstance(value, list):
            flags += [a for v in value for a in (flag, str(v))]
        elif isinstance(value, bool):
            flags += [flag] if value != f.default else []
        else:
            flags += [flag, str(value)]
    return flags


# ------------------------------------------------------------------------------------ dry run, run
def format_plan(recipe: Recipe, steps: list[Step]) -> str:
    """What `--dry-run` prints: each step's command in order, `# done:` before the ones that would be skipped."""
    lines = [f"# {recipe.path}: {len(steps)} steps; outputs in {recipe.work}, data in {recipe.data}"]
    for step in steps:
        if step.title:
            lines.append(f"# -- {step.title}")
        lines.append(("# done: " if step.is_done() else "") + step.describe())
    if any(step.name == recipe.shipped for step in steps):
        lines.append(f"# the learner: {recipe.output(recipe.shipped)}")
    elif steps:   # a part of the recipe (`--only`): what it ends with
        lines.append(f"# builds: {steps[-1].output}")
    return "\n".join(lines)


def _run_regrad(argv: list[str], quiet: bool) -> int:
    """`regrad ARGV` in a process of its own (as a user would run it; its memory is freed when it ends)."""
    return subprocess.run([sys.executable, "-m", "cli", *argv], stdout=subprocess.DEVNULL if quiet else None).returncode


def run_steps(recipe: Recipe, steps: list[Step], run_command: Callable[[list[str], bool], int] = _run_regrad) -> None:
    """Run `steps` in order, skipping the done ones; raises `RegradError` at the first step that fails.

    `run_command(argv, quiet)` runs `regrad ARGV` and returns its exit code (tests pass a fake one).
    """
    missing = sorted({str(recipe.inputs[n]) for s in steps for n in s.needs if n in recipe.inputs}
                     - {str(p) for p in recipe.inputs.values() if p.exists()})
    if missing:
        raise InputFileError(missing[0], f"not found (the recipe's [data] folder is {recipe.data}); set "
                             "REGRAD_DATA_DIR to the shared data folder")
    for step in steps:
        if step.title:
            print(f"\n=== {step.title} ===", flush=True)
        if step.is_done():
            print(f"reusing {step.output} ({step.name} is done)", flush=True)
        elif step.kind == "mix":
            print(f"\n$ {step.describe()}", flush=True)
            step.write_mix()
        else:
            argv = step.command()
            print(f"\n$ regrad {' '.join(argv)}", flush=True)
            code = run_command(argv, step.kind == "augment")
            if code != 0:
                raise RegradError(f"recipe {recipe.path}: step {step.name!r} (`regrad {argv[0]}`) failed with exit "
                                  f"code {code}; run the recipe again to continue from there")
            if step.kind == "index":
                (step.output / INDEX_DONE).touch()
        if step.kind == "train":
            _report_run(step.output)


def _report_run(output: Path) -> None:
    summary = json.loads((output / "summary.json").read_text())
    best = summary.get("best") or {}
    print(f"best validation F1 {best.get('f1', float('nan')):.1f} at step {best.get('step')}; {summary['steps']} "
          f"steps in {summary.get('wall_s', 0):.0f} s; curves in {output / 'training_curves.png'}", flush=True)
