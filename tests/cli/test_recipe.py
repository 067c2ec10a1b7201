"""Recipes (`regrad train --recipe FILE [--dry-run]`, offline_tools/training/recipe.py): the shipped learner's recipe
is the one its runs recorded, a dry run loads nothing, a bad recipe is one error line naming the file,
line and key, and a build skips what is done. No model anywhere."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import main
from offline_tools.errors import RegradError
from offline_tools.training.recipe import load_recipe, run_steps

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "regrad-smollm2-135m"
RECIPE = SHIPPED / "recipe.toml"


def _train_args(argv: list[str]) -> dict:
    """The `TrainArgs` a `regrad train` command line means, as train_args.json records them."""
    from cli.commands.train import register, train_args_from

    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    return dataclasses.asdict(train_args_from(subparsers.choices["train"].parse_args(argv[1:])))


# ---------------------------------------------------------------------------------- the shipped recipe
def test_the_shipped_recipe_is_what_the_shipped_runs_recorded():
    """Each run's `regrad train` options are those in its train_args.json (paths aside); run 1's record is
    its resumed extension; the averages are the lineage's average steps; run 13 starts from run 8's export,
    run 14 from run 13's, run 27 from run 14's, and the learner is the last export: the average of run 14's
    export and run 27 (rule 27b), with the served composition the lineage and learner.json record."""
    recipe = load_recipe(RECIPE)
    runs = {s.name: s for s in recipe.steps if s.kind == "train"}   # run1: its extension (the later step)
    lineage = json.loads((SHIPPED / "lineage.json").read_text())["steps"]
    recorded_runs = [s for s in lineage if s["kind"] == "run"]
    assert len(runs) == len(recorded_runs)
    for (name, step), record in zip(runs.items(), recorded_runs):   # both in the order they were made
        recorded = json.loads((SHIPPED / record["record"] / "train_args.json").read_text())
        planned = _train_args(step.argv)
        paths = {"output_dir", "train_files", "dev_files", "init_from"}
        assert {k: planned[k] for k in recorded if k not in paths} == {k: v for k, v in recorded.items()
                                                                       if k not in paths}, name
        assert bool(planned["init_from"]) == bool(recorded.get("init_from")) == bool(record["init_from"]), name
        assert planned["sampler"] == recorded.get("sampler", "reshuffle"), name   # the order they were trained in
    exports = [s for s in recipe.steps if s.kind == "export"]
    assert [s.needs for s in exports] == [["run1", "run2"], ["run3", "average1"], ["run5", "average2"], ["run8"],
                                          ["run13"], ["run14"], ["run14_served", "run27"]]
    averages = [s for s in lineage if s["kind"] == "average"]
    assert len(averages) == 4 and [s.name for s in exports[:3]] == ["average1", "average2", "average3"]
    assert recipe.shipped == exports[-1].name and runs["run5"].needs[-1] == "average2"
    assert runs["run8"].needs[-1] == "average3" and lineage[-8]["init_from"] == averages[2]["fingerprint"]
    assert runs["run13"].needs[-1] == "run8_served" and lineage[-7]["kind"] == "export"
    assert lineage[-6]["init_from"] == lineage[-7]["fingerprint"]   # run 13 from run 8 as it was served
    assert runs["run14"].needs[-1] == "run13_served" and lineage[-5]["kind"] == "export"
    assert lineage[-4]["init_from"] == lineage[-5]["fingerprint"]   # run 14 from run 13 as it was served
    assert runs["run27"].needs[-1] == "run14_served" and lineage[-3]["kind"] == "export"
    assert lineage[-2]["init_from"] == lineage[-3]["fingerprint"]   # run 27 from run 14 as it was served
    served = json.loads((SHIPPED / "learner.json").read_text())["composition"]
    assert lineage[-1]["kind"] == "average" and lineage[-1]["composition"] == served
    assert lineage[-1]["of"] == [lineage[-3]["fingerprint"], lineage[-2]["fingerprint"]]
    assert f"--composition {served}" in " ".join(exports[-1].argv)


def test_dry_run_lists_every_command_in_order_without_loading_anything(tmp_path: Path):
    """Even where the data folder does not exist: the plan is printed, torch and the data never loaded."""
    code = ("import json, sys, time; from cli.main import main; t = time.perf_counter(); "
            f"rc = main(['train', '--recipe', {str(RECIPE)!r}, '--dry-run']); "
            "print(json.dumps({'rc': rc, 's': time.perf_counter() - t, "
            "'loaded': sorted({'torch', 'transformers', 'tantivy', 'numpy'} & set(sys.modules))}))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "REGRAD_DATA_DIR": str(tmp_path / "no-data"),
           "REGRAD_DEMO_DIR": str(tmp_path / "work")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    *plan, result = done.stdout.strip().splitlines()
    assert json.loads(result)["rc"] == 0 and json.loads(result)["loaded"] == []
    assert time.perf_counter() - started < 60   # ~0.2 s unloaded: nothing heavy runs
    commands = [line for line in plan if not line.startswith("#")]
    verbs = [line.split()[1] if line.startswith("regrad") else "mix" for line in commands]
    assert verbs == ["synth", "index", *["augment"] * 5, "mix", "mix",            # the benchmark, runs 1-2's data
                     "synth", "index", "augment", "mix",                           # run 2's fresh people
                     "synth", "index", "augment", "augment", "mix", "mix",         # run 3's varied people
                     "synth", "index", "augment", "mix",                           # run 5's second batch
                     "synth", "index", "augment", "augment",                       # run 8's: composition,
                     "synth", "index", "augment",                                  #   a second one,
                     "synth", "index", "augment", "augment",                       #   novel relations,
                     "augment", "mix", "mix",                                      #   synthetic dev top 5
                     "train", "train", "train", "export", "train", "export", "train", "export",
                     "train", "export",                                            # run 8, served
                     *["synth"] * 5, *["index"] * 5, *["augment"] * 6, "mix", "mix",  # runs 11-12's data,
                     "index", "augment", "mix",                                    #   run 13's BioASQ
                     "train", "export",                                            # run 13, served
                     "synth", "synth", "index", "index", "augment", "augment", "mix",  # run 14's extra set
                     "train", "export",                                            # run 14, served
                     "synth", "synth", "index", "index", "augment", "augment", "mix",  # run 27's extra set
                     "train", "export"]                                            # run 27, its soup
    work, data = tmp_path / "work", tmp_path / "no-data"
    assert f"--corpus {data}/hotpotqa/ircot_hotpotqa_dev_subsampled.jsonl" in commands[1]
    runs = [c for c in commands if c.startswith("regrad train")]
    assert "--max-steps 1000" in runs[0] and runs[1].endswith("--max-steps 1500 --max-eval-examples 72 "
                                                              "--eval-every 250 --sampler reshuffle --bf16 on --resume")
    assert "--init-from" not in runs[0] + runs[1] + runs[2]
    assert f"--init-from {work}/checkpoint-soup " in runs[3] and f"--init-from {work}/checkpoint-trained " in runs[4]
    assert f"--init-from {work}/checkpoint-trained-more " in runs[5] and runs[5].endswith(
        "--bf16 on --composition softmax:0.1 --learn-temperature")
    assert "--meta-batch-size 16 " in runs[5] and "--max-steps 276 " in runs[5] and "--seed 8 " in runs[5]
    mix8 = next(c for c in commands if c.startswith(f"(mix) {work}/data_aug/train_mix_relations.jsonl"))
    assert f" + skip 840, head 1260 of {work}/data_aug/synth/train.jsonl + " in mix8
    assert mix8.endswith(f"{work}/data_aug/hotpotqa/train.jsonl x4, shuffled with random.Random(7)")
    averages = [c for c in commands if c.startswith("regrad export")]
    assert averages[0] == (f"regrad export --checkpoint {work}/checkpoint/best --checkpoint "
                           f"{work}/checkpoint-fresh/best --output {work}/checkpoint-soup --weights-dtype bfloat16")
    assert averages[2] == (f"regrad export --checkpoint {work}/checkpoint-more/best --checkpoint "
                           f"{work}/checkpoint-trained --output {work}/checkpoint-trained-more "
                           "--weights-dtype bfloat16")
    assert averages[3] == (f"regrad export --checkpoint {work}/checkpoint-relations/best --output "
                           f"{work}/checkpoint-run8 --composition likelihood:0.2 --weights-dtype bfloat16")
    assert f"--corpus {data}/pubmedqa/ori_pqal.json --corpus {data}/bioasq " in commands[-23]
    assert runs[-3].startswith(f"regrad train --train {work}/data_aug/train_mix13.jsonl --dev "
                               f"{work}/data_aug/val_relations.jsonl ")
    assert f"--init-from {work}/checkpoint-run8 " in runs[-3] and "--answer-end <|im_start|>" in runs[-2]
    assert commands[-19] == (f"regrad export --checkpoint {work}/checkpoint-run13/best --output "
                             f"{work}/checkpoint-run13-served --composition likelihood:0.2 --weights-dtype bfloat16")
    assert "--extra-train-relations 2 " in commands[-18] and "--extra-train-relations 2 " in commands[-17]
    _assert_warm_start(runs[-2], work, mix="train_mix14", start="checkpoint-run13-served", seed=14)
    assert commands[-10] == (f"regrad export --checkpoint {work}/checkpoint-run14/best --output "
                             f"{work}/checkpoint-run14-served --composition likelihood:0.2:3 "
                             "--weights-dtype bfloat16")
    assert "--extra-train-relations 4 " in commands[-9] and "--extra-train-relations 4 " in commands[-8]
    _assert_warm_start(runs[-1], work, mix="train_mix27", start="checkpoint-run14-served", seed=27)
    assert commands[-1] == (f"regrad export --checkpoint {work}/checkpoint-run14-served --checkpoint "
                            f"{work}/checkpoint-run27/last --output {work}/checkpoint-soup27-served "
                            "--composition likelihood:0.2:3")   # float16, export's default
    assert plan[-1] == f"# the learner: {work}/checkpoint-soup27-served"
    assert not work.exists()


def _assert_warm_start(run: str, work: Path, mix: str, start: str, seed: int) -> None:
    """A planned `regrad train` of the shipped lineage's warm starts: trains on `mix`, validates on the relation
    questions, starts from the export `start` with `seed`."""
    assert run.startswith(f"regrad train --train {work}/data_aug/{mix}.jsonl "
                          f"--dev {work}/data_aug/val_relations.jsonl ")
    assert f"--init-from {work}/{start} " in run and f"--seed {seed} " in run


def test_set_overrides_one_value_and_run_flags_are_refused(capsys: pytest.CaptureFixture):
    assert main(["train", "--recipe", str(RECIPE), "--dry-run", "--set", "run2.steps=7"]) == 0
    assert "--max-steps 7 " in capsys.readouterr().out
    assert main(["train", "--recipe", str(RECIPE), "--dry-run", "--lr", "1e-3"]) == 2
    assert "--lr cannot be given with it" in capsys.readouterr().err
    assert main(["train", "--recipe", str(RECIPE), "--dry-run", "--set", "run9.steps=7"]) == 2
    assert "no step or table named 'run9'" in capsys.readouterr().err
    assert main(["train", "--dry-run"]) == 2
    assert main(["train", "--output", "o"]) == 2
    assert "required: --train, --dev (or --recipe FILE)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ a small recipe
SMALL = """\
shipped = "average"

[paths]
work = "${{REGRAD_TEST_WORK:-{work}}}"
data = "{data}"

[data]
questions = "questions.jsonl"

[train]
preset = "tiny"

[[step]]
kind = "synth"
name = "people"
title = "invented people"
output = "synth"
seed = 3
varied = true

[[step]]
kind = "index"
name = "index"
output = "index"
corpora = ["people"]

[[step]]
kind = "augment"
name = "aug"
dataset = "synth"
source = "people"
split = "train"
index = "index"
output = "aug/train.jsonl"

[[step]]
kind = "mix"
name = "mix"
output = "aug/mix.jsonl"
parts = [{{ from = "aug" }}, {{ from = "questions", repeat = 2 }}]
shuffle = 1

[[step]]
kind = "mix"
name = "val"
output = "aug/val.jsonl"
parts = [{{ from = "questions", head = 1 }}, {{ from = "aug", tail = 2 }}]

[[step]]
kind = "train"
name = "run"
output = "run"
train = "mix"
dev = "val"
steps = 4
extend_to = 6
lr = 1e-3

[[step]]
kind = "export"
name = "average"
output = "average"
checkpoints = ["run", "run"]
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "questions.jsonl").write_text('{"q": 1}\n{"q": 2}\n{"q": 3}\n')
    path = tmp_path / "recipe.toml"
    path.write_text(SMALL.format(work=tmp_path / "work", data=tmp_path / "data"))
    return path


class FakeRegrad:
    """Records each `regrad` command and writes what the real one would leave behind."""

    def __init__(self) -> None:
        self.ran: list[list[str]] = []

    def __call__(self, argv: list[str], quiet: bool) -> int:
        self.ran.append(argv)
        out = Path(argv[argv.index("--index" if argv[0] == "index" else "--output") + 1])
        if argv[0] == "augment":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(f'{{"a": {i}}}\n' for i in range(5)))
        elif argv[0] == "train":
            out.mkdir(parents=True, exist_ok=True)
            steps = int(argv[argv.index("--max-steps") + 1])
            (out / "summary.json").write_text(json.dumps({"steps": steps, "best": {"f1": 50.0, "step": steps}}))
        else:
            out.mkdir(parents=True, exist_ok=True)
            for name in {"synth": ["synth.json"], "export": ["learner.json", "lineage.json"]}.get(argv[0], ["x"]):
                (out / name).write_text("{}")
        return 0


def test_a_build_runs_every_step_then_skips_the_done_ones(small: Path, capsys: pytest.CaptureFixture):
    recipe = load_recipe(small)
    work = recipe.work
    fake = FakeRegrad()
    run_steps(recipe, recipe.steps, fake)
    assert [a[0] for a in fake.ran] == ["synth", "index", "augment", "train", "train", "export"]
    assert fake.ran[0] == ["synth", "--output", f"{work}/synth", "--seed", "3", "--varied"]
    assert fake.ran[4][-1] == "--resume" and "--max-steps 6" in " ".join(fake.ran[4])
    assert (work / "index" / ".recipe-done").is_file()
    # the mix and the validation file, as `random.Random(seed).shuffle` of the concatenated lines
    aug = (work / "aug" / "train.jsonl").read_text().splitlines()
    questions = (small.parent / "data" / "questions.jsonl").read_text().splitlines()
    expected = aug + questions * 2
    random.Random(1).shuffle(expected)
    assert (work / "aug" / "mix.jsonl").read_text() == "\n".join(expected) + "\n"
    assert (work / "aug" / "val.jsonl").read_text().splitlines() == questions[:1] + aug[-2:]
    assert "best validation F1 50.0 at step 6" in capsys.readouterr().out

    again = FakeRegrad()   # everything done: only augment runs (it skips its done questions by itself)
    run_steps(recipe, recipe.steps, again)
    assert [a[0] for a in again.ran] == ["augment"]
    capsys.readouterr()
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    plan = [line for line in capsys.readouterr().out.splitlines() if "regrad" in line or "(mix)" in line]
    assert [line.startswith("# done: ") for line in plan] == [True, True, False, True, True, True, True, True]


def test_a_stopped_run_continues_with_resume_and_a_longer_run_extends(small: Path):
    recipe = load_recipe(small, overrides=["run.extend_to=0"])
    run = recipe.step("run")
    (run.output / "last").mkdir(parents=True)
    (run.output / "last" / "trainer_state.json").write_text("{}")
    assert not run.is_done() and run.command()[-1] == "--resume"
    (run.output / "summary.json").write_text('{"steps": 4}')
    assert run.is_done()
    longer = load_recipe(small, overrides=["run.steps=9", "run.extend_to=0"]).step("run")
    assert not longer.is_done() and longer.command()[-1] == "--resume"


def test_only_what_a_target_needs_is_planned(small: Path):
    recipe = load_recipe(small)
    assert [s.name for s in recipe.plan(["aug"])] == ["people", "index", "aug"]
    assert [s.name for s in recipe.plan(["val"])] == ["people", "index", "aug", "val"]
    with pytest.raises(RegradError, match="no step named 'vall'; steps: people, index, aug, mix, val, run, average"):
        recipe.plan(["vall"])


def test_a_failing_step_stops_the_build_naming_it(small: Path):
    recipe = load_recipe(small)
    with pytest.raises(RegradError, match="step 'index' .*exit code 3"):
        run_steps(recipe, recipe.steps, lambda argv, quiet: 3 if argv[0] == "index" else FakeRegrad()(argv, quiet))
    (small.parent / "data" / "questions.jsonl").unlink()
    with pytest.raises(RegradError, match="questions.jsonl: not found .*REGRAD_DATA_DIR"):
        run_steps(recipe, recipe.steps, FakeRegrad())


@pytest.mark.parametrize("edit, line, message", [
    (('output = "aug/mix.jsonl"\n', ''), 36, "step 'mix' needs output = \"PATH\""),   # its [[step]] line
    (('kind = "index"', 'kind = "indx"'), 22, "kind = 'indx' is not a step kind; known: synth, index, augment"),
    (('train = "mix"', 'train = "mixx"'), 53, "train = 'mixx' is not defined before this step; it must name an "
                                              "earlier mix or augment or data (questions, aug, mix, val)"),
    (('corpora = ["people"]', 'corpora = ["val"]'), 25, "corpora = 'val' is not defined before this step"),
    (('lr = 1e-3', 'lr = "fast"'), 57, "step 'run': lr = 'fast' must be float or int"),
    (('steps = 4', 'steps = 0'), 55, "steps = 0 must be an integer >= 1"),
    (('preset = "tiny"', 'presets = "tiny"'), 11, "[train]: 'presets' is not a `regrad train` option"),
    (('shipped = "average"', 'shipped = "mix"'), 1, "shipped = 'mix' must name a train or export step"),
    (('seed = 3', 'seed = [3]'), 18, "seed = [3] must be a number, a string or a boolean"),
    (('[data]', '[data'), None, "not valid TOML: "),
    (('lr = 1e-3', 'lr = 1e-3\ntask_k = 3'), 58, "step 'run': task_k = 3 must be a list of int"),
    (('lr = 1e-3', 'lr = 1e-3\ntask_k = []'), 58, "task_k = [] must be a list of int"),
    (('checkpoints = ["run", "run"]', 'checkpoints = ["run"]\ncomposition = "likelyhood:0.2"'), 64,
     "step 'average': composition = 'likelyhood:0.2': composition must be one of sum, softmax, likelihood"),
    (('checkpoints = ["run", "run"]', 'checkpoints = ["run"]\ncomposition = "softmax:0"'), 64,
     "composition temperature must be finite and > 0"),
    (('checkpoints = ["run", "run"]', 'checkpoints = ["run"]\nweights_dtype = "int8"'), 64,
     "step 'average': weights_dtype = 'int8': must be one of float16, bfloat16, float32"),
    (('{ from = "aug", tail = 2 }', '{ from = "aug", skip = -1 }'), 43, "skip = -1 must be an integer >= 0"),
    (('{ from = "aug", tail = 2 }', '{ from = "aug", skip = 1, head = 1, tail = 2 }'), 47,
     "with at most one of repeat, head, tail or sample (and skip, answer)"),
    (('{ from = "aug", tail = 2 }', '{ from = "aug", answer = 1 }'), 47,
     "a part's answer is a gold answer such as \"no\", not 1"),
    (('{ from = "questions", head = 1 }', '{ from = "questions", sample = 1 }'), None,
     "step 'val': sample and into draw with random.Random(shuffle); add shuffle = SEED"),
    (('shuffle = 1', 'shuffle = 1\ninto = "aug"'), None,
     "into = \"MIX\" and replacing = [\"ID PREFIX\", ...] go together"),
    (('shuffle = 1', 'shuffle = 1\ninto = "aug"\nreplacing = "s"'), None,
     "replacing = [\"ID PREFIX\", ...], not 's'"),
])
def test_a_bad_recipe_is_one_error_line_naming_file_line_and_key(small: Path, capsys: pytest.CaptureFixture,
                                                                 edit: tuple[str, str], line: int, message: str):
    old, new = edit
    text = small.read_text()
    assert old in text
    small.write_text(text.replace(old, new, 1))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith(f"regrad: error: {small}"), captured.err
    if line is not None:
        assert captured.err.startswith(f"regrad: error: {small}:{line}: "), captured.err
    assert message in captured.err, captured.err


def test_a_step_its_command_would_refuse_is_caught_before_anything_runs(small: Path, capsys: pytest.CaptureFixture):
    small.write_text(small.read_text().replace("seed = 3", "sede = 3"))
    assert main(["train", "--recipe", str(small)]) == 3
    err = capsys.readouterr().err
    assert f"{small}:13: step 'people': `regrad synth" in err and "unrecognized arguments: --sede 3" in err
    assert not (small.parent / "work").exists()


def test_a_list_option_is_one_flag_per_value(small: Path, capsys: pytest.CaptureFixture):
    """`task_k = [1, 3, 5]` on a train step is `--task-k 1 --task-k 3 --task-k 5`, which means [1, 3, 5]."""
    small.write_text(small.read_text().replace("lr = 1e-3", "lr = 1e-3\ntask_k = [1, 3, 5]"))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    [run, _extension] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("regrad train")]
    assert "--task-k 1 --task-k 3 --task-k 5" in run
    step = next(s for s in load_recipe(small).steps if s.kind == "train")
    assert _train_args(step.argv)["task_k"] == [1, 3, 5]


def test_an_export_step_can_set_the_learners_served_composition(small: Path, capsys: pytest.CaptureFixture):
    """`composition = SPEC` on an export step is `regrad export --composition SPEC` (the dry run shows it)."""
    small.write_text(small.read_text().replace('checkpoints = ["run", "run"]',
                                               'checkpoints = ["run"]\ncomposition = "likelihood:0.2"'))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    work = load_recipe(small).work
    exports = [line for line in capsys.readouterr().out.splitlines() if line.startswith("regrad export")]
    assert exports == [f"regrad export --checkpoint {work}/run/best --output {work}/average --composition "
                       "likelihood:0.2"]
    fake = FakeRegrad()
    recipe = load_recipe(small)
    run_steps(recipe, recipe.steps, fake)
    assert fake.ran[-1][0] == "export" and fake.ran[-1][-2:] == ["--composition", "likelihood:0.2"]


def test_an_export_step_can_set_the_learners_served_beam_width(small: Path, capsys: pytest.CaptureFixture):
    """`beams = W` on an export step is `regrad export --beams W`; a width out of 1..8 is one error line."""
    text = small.read_text()
    small.write_text(text.replace('checkpoints = ["run", "run"]', 'checkpoints = ["run"]\nbeams = 4'))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    exports = [line for line in capsys.readouterr().out.splitlines() if line.startswith("regrad export")]
    assert exports[0].endswith("--beams 4")
    small.write_text(text.replace('checkpoints = ["run", "run"]', 'checkpoints = ["run"]\nbeams = 0'))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 3   # a recipe error, as the others
    assert "beams = 0: must be in 1..8" in capsys.readouterr().err


def test_an_export_step_can_name_its_weights_dtype(small: Path, capsys: pytest.CaptureFixture):
    """`weights_dtype = "bfloat16"` is `regrad export --weights-dtype bfloat16`; without it, export's default."""
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    assert "--weights-dtype" not in capsys.readouterr().out
    small.write_text(small.read_text().replace('checkpoints = ["run", "run"]',
                                               'checkpoints = ["run", "run"]\nweights_dtype = "bfloat16"'))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    [export] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("regrad export")]
    assert export.endswith(" --weights-dtype bfloat16")
    fake = FakeRegrad()
    recipe = load_recipe(small)
    run_steps(recipe, recipe.steps, fake)
    assert fake.ran[-1][0] == "export" and fake.ran[-1][-2:] == ["--weights-dtype", "bfloat16"]


def test_a_run_is_its_best_and_run_slash_last_its_last_state(small: Path, capsys: pytest.CaptureFixture):
    """checkpoints = ["run/last"] exports the run's last/ state; "RUN/last" of a step that is no run is refused."""
    small.write_text(small.read_text().replace('checkpoints = ["run", "run"]', 'checkpoints = ["run", "run/last"]'))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    work = load_recipe(small).work
    [export] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("regrad export")]
    assert export == f"regrad export --checkpoint {work}/run/best --checkpoint {work}/run/last --output {work}/average"
    small.write_text(small.read_text().replace('"run/last"', '"mix/last"'))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 3
    assert "checkpoints = 'mix/last' is not defined before this step" in capsys.readouterr().err


def test_a_run_can_warm_start_from_a_learners_folder_and_only_builds_what_a_step_needs(
        small: Path, capsys: pytest.CaptureFixture):
    """[learners] names a learner folder that exists already (the shipped one, say): init_from and export
    checkpoints take it, the plan stops at it (its lineage is not rebuilt), and --only STEP plans STEP alone."""
    shipped = small.parent / "shipped"
    shipped.mkdir()
    (shipped / "learner.json").write_text("{}")
    text = small.read_text().replace("[train]", f'[learners]\nshipped = "{shipped}"\n\n[train]')
    small.write_text(text.replace("lr = 1e-3", 'lr = 1e-3\ninit_from = "shipped"')
                     .replace('checkpoints = ["run", "run"]', 'checkpoints = ["run", "shipped"]'))
    recipe = load_recipe(small)
    work = recipe.work
    fake = FakeRegrad()
    run_steps(recipe, recipe.plan(["run"]), fake)
    assert [a[0] for a in fake.ran] == ["synth", "index", "augment", "train", "train"]   # no export
    assert f"--init-from {shipped}" in " ".join(fake.ran[3])
    assert recipe.step("average").command()[:5] == ["export", "--checkpoint", f"{work}/run/best", "--checkpoint",
                                                    str(shipped)]
    capsys.readouterr()
    assert main(["train", "--recipe", str(small), "--dry-run", "--only", "val"]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert not any(line.startswith(("regrad train", "regrad export")) for line in plan)
    assert plan[-1] == f"# builds: {work}/aug/val.jsonl"
    assert main(["train", "--recipe", str(small), "--dry-run", "--only", "shipped"]) == 3
    assert "no step named 'shipped'" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--only", "run"]) == 2   # a usage error
    assert "--only go with --recipe FILE" in capsys.readouterr().err

    clash = small.read_text().replace('name = "average"', 'name = "shipped"').replace('= "average"', '= "shipped"')
    small.write_text(clash)
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 3
    assert "step 'shipped': the name is already used by an earlier step, [data] or [learners] entry" in \
        capsys.readouterr().err
    small.write_text(text.replace("lr = 1e-3", 'lr = 1e-3\ninit_from = "shipped"'))
    small.write_text(small.read_text().replace(f'shipped = "{shipped}"', 'shipped = "nowhere"'))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"regrad: error: {small}:11: ") and "[learners] shipped = 'nowhere': no learner.json" in err


def test_an_augment_step_can_keep_only_answerable_questions(small: Path, capsys: pytest.CaptureFixture):
    """answerable = true on an augment step is `regrad augment --answerable`; anything but a boolean is refused."""
    text = small.read_text()
    assert 'split = "train"\n' in text
    small.write_text(text.replace('split = "train"\n', 'split = "train"\nanswerable = true\n', 1))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    [augment] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("regrad augment")]
    assert augment.endswith("--no-progress --answerable")
    small.write_text(text.replace('split = "train"\n', 'split = "train"\nanswerable = "yes"\n', 1))
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 3
    assert "answerable = 'yes' must be true or false" in capsys.readouterr().err


def test_a_mix_part_can_skip_a_files_first_lines(small: Path, capsys: pytest.CaptureFixture):
    """skip = N leaves out the first N lines, then repeat, head or tail takes from the rest."""
    small.write_text(small.read_text().replace(
        '{ from = "questions", head = 1 }, { from = "aug", tail = 2 }',
        '{ from = "questions", skip = 1, head = 1 }, { from = "aug", skip = 1, tail = 1 }, '
        '{ from = "aug", skip = 3, repeat = 2 }, { from = "questions", skip = 9 }'))
    recipe = load_recipe(small)
    run_steps(recipe, recipe.plan(["val"]), FakeRegrad())
    aug = (recipe.work / "aug" / "train.jsonl").read_text().splitlines()
    questions = (small.parent / "data" / "questions.jsonl").read_text().splitlines()
    assert (recipe.work / "aug" / "val.jsonl").read_text().splitlines() == \
        questions[1:2] + aug[-1:] + aug[3:] * 2
    capsys.readouterr()
    assert main(["train", "--recipe", str(small), "--dry-run"]) == 0
    [val] = [line for line in capsys.readouterr().out.splitlines() if f"{recipe.work}/aug/val.jsonl <-" in line]
    assert f"<- skip 1, head 1 of {small.parent}/data/questions.jsonl + skip 1, tail 1 of " in val
    assert f" + skip 3, all of {recipe.work}/aug/train.jsonl x2 + skip 9, all of " in val


def test_a_run_cut_short_keeps_the_whole_schedule_and_is_done_where_it_stops(small: Path):
    small.write_text(small.read_text().replace("extend_to = 6\n", "stop_after = 2\n"))
    recipe = load_recipe(small)
    [run] = [s for s in recipe.steps if s.name == "run"]
    assert run.argv[run.argv.index("--max-steps") + 1] == "4" and run.argv[run.argv.index("--stop-after") + 1] == "2"
    run.output.mkdir(parents=True)
    (run.output / "summary.json").write_text(json.dumps({"steps": 1}))
    assert not run.is_done()
    (run.output / "summary.json").write_text(json.dumps({"steps": 2}))
    assert run.is_done()
    small.write_text(small.read_text().replace("stop_after = 2\n", "stop_after = 2\nextend_to = 6\n"))
    with pytest.raises(RegradError, match="stop_after and extend_to do not go together"):
        load_recipe(small)


def _mix_recipe(tmp_path: Path, files: dict[str, list[str]], mix_steps: str, train: str, dev: str) -> tuple[Path, Path]:
    """A data folder with `files` (NAME.jsonl, one entry each) and a recipe of `mix_steps` and one run on
    `train` / `dev`: (data folder, recipe path)."""
    data = tmp_path / "data"
    data.mkdir()
    for name, lines in files.items():
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    entries = "\n".join(f'{name} = "{name}.jsonl"' for name in files)
    recipe_path = tmp_path / "recipe.toml"
    recipe_path.write_text(f"""
shipped = "run"
[paths]
work = "{tmp_path / 'work'}"
data = "{data}"
[data]
{entries}
[train]
preset = "tiny"{mix_steps}
[[step]]
kind = "train"
name = "run"
output = "run"
train = "{train}"
dev = "{dev}"
steps = 1
""")
    return data, recipe_path


def test_a_mix_can_sample_its_parts_and_put_them_in_place_of_another_mixs_lines(tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture):
    """sample = N draws with random.Random(shuffle), which then shuffles the whole; into + replacing puts the
    result in place of lines of another mix whose id has one of the prefixes, drawn with the same
    generator, and keeps the rest of it in its order."""
    rows = {name: [json.dumps({"id": f"{name}-{i}"}) for i in range(n)] for name, n in
            (("comp", 8), ("hot", 6), ("extra", 5))}
    data, recipe_path = _mix_recipe(tmp_path, rows, """
[[step]]
kind = "mix"
name = "base"
output = "base.jsonl"
parts = [{ from = "comp", sample = 5 }, { from = "hot", sample = 3 }]
shuffle = 11
[[step]]
kind = "mix"
name = "swapped"
output = "swapped.jsonl"
parts = [{ from = "extra", sample = 2 }]
shuffle = 12
into = "base"
replacing = ["comp"]""", train="swapped", dev="base")
    recipe = load_recipe(recipe_path)
    run_steps(recipe, recipe.plan(["swapped"]), FakeRegrad())
    rng = random.Random(11)
    base = rng.sample(rows["comp"], 5) + rng.sample(rows["hot"], 3)
    rng.shuffle(base)
    assert (recipe.work / "base.jsonl").read_text() == "\n".join(base) + "\n"
    rng = random.Random(12)
    new = rng.sample(rows["extra"], 2)
    rng.shuffle(new)
    expected = list(base)
    for i, line in zip(sorted(rng.sample([i for i, line in enumerate(base) if "comp-" in line], 2)), new):
        expected[i] = line
    swapped = (recipe.work / "swapped.jsonl").read_text().splitlines()
    assert swapped == expected and swapped != base
    assert [a == b for a, b in zip(swapped, base)].count(False) == 2   # two comp lines replaced, the rest kept
    assert main(["train", "--recipe", str(recipe_path), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"<- sample 2 of {data}/extra.jsonl, shuffled with random.Random(12), in place of lines of " \
           f"{recipe.work}/base.jsonl whose id starts with comp" in plan

    (recipe.work / "swapped.jsonl").unlink()
    (recipe.work / "base.jsonl").write_text(base[0] + "\nnot json\n")
    with pytest.raises(RegradError, match="base.jsonl:2: is not a JSON object with an id"):
        run_steps(recipe, recipe.plan(["swapped"])[-1:], FakeRegrad())
    (recipe.work / "base.jsonl").write_text("\n".join(base) + "\n")
    (data / "extra.jsonl").write_text(rows["extra"][0] + "\n")   # fewer lines than the sample asks
    with pytest.raises(RegradError, match="extra.jsonl: has 1 lines to sample from, not 2"):
        run_steps(recipe, recipe.plan(["swapped"]), FakeRegrad())
    assert not (recipe.work / "swapped.jsonl").exists()


def test_a_mix_part_can_take_only_the_lines_of_one_answer(tmp_path: Path, capsys: pytest.CaptureFixture):
    """answer = "no" keeps the lines whose first gold answer is "no" in any case (to balance yes/no questions),
    before sample draws from them; a line whose first answer is another one, or that has none, is left out."""
    answers = [["yes"], ["No"], ["no", "nope"], ["yes", "no"], [], ["Paris"], ["NO"]]
    rows = [json.dumps({"id": f"q-{i}", "answers": a}) for i, a in enumerate(answers)]
    data, recipe_path = _mix_recipe(tmp_path, {"questions": rows}, """
[[step]]
kind = "mix"
name = "all_no"
output = "all_no.jsonl"
parts = [{ from = "questions", answer = "no" }, { from = "questions", skip = 2, answer = "No", head = 1 }]
[[step]]
kind = "mix"
name = "some_no"
output = "some_no.jsonl"
parts = [{ from = "questions", answer = "no", sample = 2 }]
shuffle = 5""", train="all_no", dev="some_no")
    recipe = load_recipe(recipe_path)
    run_steps(recipe, recipe.plan(["all_no", "some_no"]), FakeRegrad())
    assert (recipe.work / "all_no.jsonl").read_text().splitlines() == [rows[1], rows[2], rows[6], rows[2]]
    rng = random.Random(5)
    expected = rng.sample([rows[1], rows[2], rows[6]], 2)
    rng.shuffle(expected)
    assert (recipe.work / "some_no.jsonl").read_text().splitlines() == expected
    assert main(["train", "--recipe", str(recipe_path), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"<- answer 'no', all of {data}/questions.jsonl + skip 2, answer 'No', head 1 of " in plan
    assert f"<- answer 'no', sample 2 of {data}/questions.jsonl, shuffled" in plan


def test_the_demo_builds_its_data_with_the_recipes_first_steps():
    import cli.demo as demo

    recipe = load_recipe(demo.RECIPE, base=demo.REPO)
    assert [s.kind for s in recipe.plan([demo.SYNTH_TEST, demo.HOTPOT_DEV])] == ["synth", "index", "augment", "augment"]
    assert recipe.step(demo.INDEX).kind == "index"
