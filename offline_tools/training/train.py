"""Meta-training (the reference's bi-level objective, with its inconsistencies fixed).

The objective is in `offline_tools/training/meta.py`: G = Σ_i ∇θ NTP(passage_i), θ' = θ − α ⊙ G, outer
loss = CE(answer | prompt; θ'). AdamW on (θ, α) over meta-batches, warm-up then linear decay,
clipping at `clip_norm`. What makes the gradients teach (measured, see docs/results.md):

* second order (the meta-gradient flows through G, so θ learns to make passage gradients useful;
  `--first-order` trains θ only at θ' ≈ θ and learns a closed-book answer format);
* the step sizes α in their own AdamW group with a larger learning rate (`--step-size-lr`,
  default 1e-2): Adam moves a parameter by about its lr per step, so at the LoRA lr α barely
  leaves its init and γα⊙G stays too small to change an answer.

The paper's setting, one lr 4e-4 for everything, is `--step-size-lr 4e-4` (add `--first-order`
for FOMAML). Every validation reports the answer loss with and without the gradients (γ = 1 vs
γ = 0) and its difference (the gain), EM/F1 with and without them, α and ‖α⊙G‖, so a run whose
gradients teach nothing is obvious at a glance.

Fixes over the reference: one passage format and max length everywhere (`models.gradients`),
a validation file separate from any reported test split, deterministic targets (answers[0] of
a deterministic alias list), no weight decay on α, `fix` mode works, one forward per passage.

Layout: `TrainArgs` (each field carries its `regrad train` flag and help text, so a default lives
only here), the pieces of a run (setup, one step, validation, checkpoints, logging), then `train()`,
a short script of those. Importing this module does not import torch: `regrad` builds its parser
from `TrainArgs` for every command.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.base import cpu_has_amx, resolve_device, resolve_dtype
from offline_tools.datasets.augmented import AugmentedRecord, read_augmented
from offline_tools.errors import InputFileError, UsageError
from offline_tools.evaluation.metrics import aggregate, score

if TYPE_CHECKING:  # torch and the objective are imported where they are used (see the module docstring)
    import torch
    from accelerate import PartialState
    from tqdm import tqdm

    from models import Learner
    from offline_tools.training.meta import answer_target, outer_loss, task_passages

__all__ = ["TrainArgs", "train", "task_passages", "answer_target", "outer_loss", "validate"]

_REEXPORTED = ("task_passages", "answer_target", "outer_loss")  # from offline_tools.training.meta, on first use


def __getattr__(name: str):
    if name in _REEXPORTED:
        from offline_tools.training import meta

        return getattr(meta, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------- options
AUTO_ON_OFF = ("auto", "on", "off")
SAMPLERS = ("epoch", "reshuffle")


def _option(default: Any = MISSING, *, help: str, flag: str | None = None, **argparse_kwargs: Any) -> Any:
    """A `TrainArgs` field and its `regrad train` flag: `help` (argparse expands `%(default)s`), the flag
    (default `--field-name`) and extra `argparse` keywords (choices, metavar). No default = required."""
    return field(default=default, metadata={"help": help, "flag": flag, "argparse": argparse_kwargs})


@dataclass
class TrainArgs:
    """Every option of a run; `regrad train` has exactly one flag per field (cli/commands/train.py)."""

    output_dir: str = _option(flag="--output", help="checkpoint folder (best/, last/, logs)")
    train_files: list[str] = _option(flag="--train", metavar="AUG.jsonl", help="augmented training file (repeatable)")
    dev_files: list[str] = _option(
        flag="--dev", metavar="AUG.jsonl",
        help="augmented validation file, separate from any reported test split (repeatable)")
    preset: str = _option("smollm2-135m-instruct", help="learner preset to meta-train (default %(default)s)")
    top_k: int = _option(3, help="passages per question whose gradients are applied (default %(default)s)")
    task_k: list[int] | None = _option(
        None, metavar="K",
        help="tasks at several k: each training task applies the gradients of its top K passages, K drawn per "
             "task and step from these (repeatable: --task-k 1 --task-k 3 --task-k 5); validation keeps "
             "--top-k (default: --top-k for every task)")
    blind: bool = _option(  # False: passages also in the prompt (ReGrad + context)
        True, flag="--with-context",
        help="also put the passages in the prompt (ReGrad + context); default is blind")
    meta_batch_size: int = _option(4, help="questions per meta-batch, i.e. per optimizer step (default %(default)s)")
    lr: float = _option(4e-4, help="LoRA learning rate (the paper's 4e-4)")
    step_size_lr: float | None = _option(  # None: the LoRA lr (the paper's single lr; not a flag value)
        1e-2, help="learning rate of the step sizes alpha, in their own AdamW group (default %(default)s); "
                   "--step-size-lr 4e-4 is the paper's single-lr setting")
    weight_decay: float = _option(
        0.01, help="AdamW weight decay of the LoRA tensors; the step sizes are not decayed (default %(default)s)")
    warmup_ratio: float = _option(
        0.1, help="fraction of the steps warming the learning rates up, before a linear decay to 0 "
                  "(default %(default)s)")
    clip_norm: float = _option(0.5, help="clip the meta-gradient's global norm to this (default %(default)s)")
    epochs: int = _option(
        1, help="passes over the training questions (default %(default)s); with 1 epoch, --max-steps alone "
                "sets the run's length")
    max_steps: int | None = _option(
        None, help="train N meta-batches, past one pass if need be (default: --epochs passes); with --epochs above "
                   "1, at most N")
    stop_after: int | None = _option(
        None, help="end this run after N steps, validated and saved there, its learning-rate schedule still "
                   "the whole run's (--max-steps / --epochs): a run cut short that --resume continues (default: "
                   "run to the end)")
    max_train_examples: int | None = _option(None, help="use only the first N training questions (default: all)")
    max_eval_examples: int = _option(
        32, help="validate on the first N validation questions (default %(default)s)")
    eval_every: int = _option(
        25, help="validate, log and save best/ and last/ every N steps and at the end (default %(default)s)")
    max_new_tokens: int = _option(16, help="answer tokens generated per validation question (default %(default)s)")
    seed: int = _option(0, help="seed of the learner's initialisation and of the question order (default %(default)s)")
    sampler: str = _option(
        "epoch", choices=list(SAMPLERS),
        help="the question order: epoch = one permutation per pass, Random(seed + pass), every question once "
             "and the same on resume; reshuffle = the order every learner up to run 28 was trained with (the "
             "permutation reshuffled in place at every step: questions can repeat within a pass, and a resumed "
             "run restarts from the unshuffled order); the shipped recipe names it (default %(default)s)")
    device: str = _option(
        "auto", choices=["auto", "cpu", "cuda"],
        help="where to train: auto = cuda when a GPU is visible (under `accelerate launch`, each process's own)")
    resume: bool = _option(False, help="continue from OUTPUT/last")
    init_from: str | None = _option(  # warm start: weights only; the optimizer and the schedule start afresh
        None, metavar="CHECKPOINT",
        help="start from this learner's weights (a best/ folder or a shipped checkpoint of the same --preset) "
             "with a fresh optimizer and schedule, e.g. to continue the shipped learner on new data; "
             "--resume from OUTPUT/last takes precedence")
    first_order: bool = _option(  # FOMAML: no Hessian-vector products (cheaper; learns far less, see docs)
        False, help="first-order meta-gradient (no create_graph): cheaper, but theta then learns an answer "
                    "format, not how to use passage gradients (docs/results.md)")
    batched: str = _option(  # one forward for a meta-batch's passages / prompts: auto = on GPUs only
        "auto", flag="--batch", choices=list(AUTO_ON_OFF),
        help="one batched forward for all passages / prompts of a meta-batch: auto = on a GPU; on a "
             "CPU one task at a time is faster (padding costs more than batching saves)")
    bf16: str = _option(  # autocast: "auto" (GPU or AMX CPU), "on", "off"
        "auto", choices=list(AUTO_ON_OFF),
        help="bf16 autocast: auto = on a GPU or an AMX CPU (native bf16 matmuls), else off")
    composition: str = _option(
        "sum", metavar="SPEC",
        help="how a task's passage gradients are combined in the inner step, as served: sum, softmax:T "
             "(weights k*softmax(score / (top score * T)) from the retrieval scores) or likelihood:T (weights "
             "k*softmax(l / T) from the base model's likelihood of the question given each passage), either with "
             ":M to make the weights sum to M at every k (tasks at several k then take one magnitude); saved "
             "with the learner as its served default (default %(default)s)")
    answer_end: str = _option(
        "<|im_end|>", metavar="TOKEN",
        help="the token every answer target ends with (default %(default)s, the chat template's end of turn); "
             "<|im_start|> continues a learner that ends its answers with it, as run 8 does (its GPU's "
             "tokenizer had it as eos; docs/results.md)")
    doc_update: str | None = _option(
        None, choices=["shared", "orthogonal"],
        help="how a passage's gradient may move the LoRA: shared (every direction, the paper's) or orthogonal "
             "(projected out of the LoRA's own row and column spaces first, in training, encoding and serving "
             "alike; saved with the learner); default: the preset's, or the --init-from checkpoint's")
    learn_temperature: bool = _option(
        False, help="with --composition softmax:T or likelihood:T: learn T with the LoRA and the step sizes (T "
                    "is the start; its log in the step sizes' optimizer group)")

    def train_k(self) -> int:
        """The most passages a training task applies: `--top-k`, or the largest `--task-k`."""
        return max(self.task_k) if self.task_k else self.top_k

    def __post_init__(self) -> None:
        checks = {
            "top_k": self.top_k >= 1, "task_k": all(k >= 1 for k in self.task_k or ()),
            "meta_batch_size": self.meta_batch_size >= 1, "lr": self.lr > 0,
            "step_size_lr": self.step_size_lr is None or self.step_size_lr >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1, "clip_norm": self.clip_norm > 0,
            "epochs": self.epochs >= 1, "max_steps": self.max_steps is None or self.max_steps >= 1,
            "stop_after": self.stop_after is None or self.stop_after >= 1, "answer_end": bool(self.answer_end),
            "eval_every": self.eval_every >= 1, "max_eval_examples": self.max_eval_examples >= 1,
            "bf16": self.bf16 in AUTO_ON_OFF, "batched": self.batched in AUTO_ON_OFF,
            "sampler": self.sampler in SAMPLERS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"invalid training option(s): {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")
        from engine.composition import Composition

        try:
            kind = Composition.parse(self.composition).kind
        except ValueError as error:
            raise UsageError(f"--composition {self.composition}: {error}") from None
        if self.learn_temperature and kind == "sum":
            raise UsageError("--learn-temperature needs --composition softmax:T or likelihood:T (a temperature "
                             "to learn)")


# ------------------------------------------------------------------------------------------ setup
def _processes() -> PartialState:
    """Under `accelerate launch` every process takes its share of each meta-batch and the meta-gradients
    are summed across processes (DDP cannot wrap a double backward); a plain `regrad train` is one process.
    Checks the `train` extra first (accelerate, and matplotlib for the curves written at the end), so a missing
    package stops the run before it starts, not after it."""
    from offline_tools.errors import import_extra

    import_extra("matplotlib", "train", "regrad train")
    return import_extra("accelerate", "train", "regrad train").PartialState()


def _prepare_output(args: TrainArgs, state: PartialState) -> Path:
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()) and not args.resume:
        raise UsageError(f"output folder {output} is not empty; pass --resume to continue, or choose a new folder")
    state.wait_for_everyone()  # every process has checked before the main one writes there
    return output


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _load_records(paths: list[str], limit: int | None) -> list[AugmentedRecord]:
    records: list[AugmentedRecord] = []
    for path in paths:
        records.extend(read_augmented(path))
    if not records:
        raise InputFileError(paths[0] if paths else "(none)", "holds no records to train on")
    return records[:limit] if limit else records


def _check_splits(train_records: list[AugmentedRecord], dev_records: list[AugmentedRecord]) -> None:
    overlap = {r.id for r in train_records} & {r.id for r in dev_records}
    if overlap:
        raise UsageError(
            f"{len(overlap)} validation question(s) are also in the training files "
            f"(e.g. {sorted(overlap)[0]!r}); validation must be a separate split"
        )


def _load_data(args: TrainArgs) -> tuple[list[AugmentedRecord], list[AugmentedRecord]]:
    train_records = _load_records(args.train_files, args.max_train_examples)
    dev_records = _load_records(args.dev_files, args.max_eval_examples)
    _check_splits(train_records, dev_records)
    return train_records, dev_records


def _device(args: TrainArgs, state: PartialState) -> str:
    return str(state.device) if state.num_processes > 1 else resolve_device(args.device)


def _learner(args: TrainArgs, device: str) -> Learner:
    """The untrained preset: a bf16 base on CUDA, fp32 on a CPU (the LoRA and step sizes are fp32)."""
    from models import Learner, load_preset

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    learner = Learner.create(load_preset(args.preset), device=device, dtype=dtype, seed=args.seed)
    if args.init_from:
        _warm_start(learner, Path(args.init_from))
    if args.doc_update:   # before --resume compares last/'s config with this learner's
        learner.config.doc_update = args.doc_update
    return learner


def _warm_start(learner: Learner, checkpoint: Path) -> None:
    """Load `checkpoint`'s weights into the fresh `learner`, refusing another preset or base model (its
    `doc_update` is adopted: --doc-update may then change it)."""
    learner.config.doc_update = learner.read_meta(checkpoint).get("config", {}).get("doc_update", "shared")
    learner.require_same_preset(checkpoint, f"--init-from {checkpoint} must be a learner of --preset "
                                            f"{learner.config.name}")
    learner.load_weights(checkpoint)


class TaskComposition:
    """The inner step's combination of passage gradients: the plain sum, or a softmax (over retrieval
    scores, or over the question's likelihood given each passage) at a fixed or learned temperature
    (its log is a parameter, so T stays positive)."""

    def __init__(self, spec: str, learn: bool, device) -> None:
        import torch

        from engine.composition import Composition

        composition = Composition.parse(spec)
        self.kind = composition.kind
        self.total = composition.total     # what a task's weights sum to (None: its number of passages)
        self.softmax = composition.kind != "sum"
        self.log_temperature = torch.nn.Parameter(
            torch.tensor(math.log(composition.temperature), device=device), requires_grad=learn)
        self.learn = learn
        self._likelihoods: dict[tuple[str, str, int], list[float]] = {}   # the base model's: fixed, so kept

    def temperature(self):
        """For `offline_tools.training.meta.task_weights`: None (plain sum), else T (a tensor when learned)."""
        if not self.softmax:
            return None
        return self.log_temperature.exp() if self.learn else float(self.log_temperature.detach().exp())

    def likelihoods(self, learner: Learner, records: list[AugmentedRecord], top_k: int) -> list[list[float] | None]:
        """Each record's ℓ per passage under the likelihood composition (computed once per task: the
        base model does not train), else None for every record."""
        if self.kind != "likelihood":
            return [None] * len(records)
        from offline_tools.training.meta import task_likelihoods

        keys = [(r.id, r.question, min(len(r.passages), top_k)) for r in records]   # a task at each --task-k
        new = {key: r for key, r in zip(keys, records) if key not in self._likelihoods}
        if new:
            self._likelihoods.update(zip(new, task_likelihoods(learner, list(new.values()), top_k)))
        return [self._likelihoods[key] for key in keys]

    def spec(self) -> str:
        """What the learner is saved with as its served composition, e.g. `softmax:0.1`."""
        if not self.softmax:
            return "sum"
        total = "" if self.total is None else f":{self.total:g}"
        return f"{self.kind}:{float(self.log_temperature.detach().exp()):.4g}{total}"

    def start_from(self, spec: str | None) -> None:
        """Resume: the temperature a saved learner reached."""
        import torch

        from engine.composition import Composition

        if self.softmax and spec and spec.startswith(self.kind):
            with torch.no_grad():
                self.log_temperature.fill_(math.log(Composition.parse(spec).temperature))


def _optimizer(learner: Learner, args: TrainArgs, composition: TaskComposition | None = None) -> torch.optim.AdamW:
    """LoRA with weight decay at `lr`; the step sizes (and a learned temperature) in their own group, no
    decay, at `step_size_lr`."""
    import torch

    step_sizes = list(learner.step_sizes.parameters())
    if composition is not None and composition.learn:
        step_sizes.append(composition.log_temperature)
    groups = [
        {"params": list(learner.lora_tensors().values()), "weight_decay": args.weight_decay, "base_lr": args.lr},
        {"params": step_sizes, "weight_decay": 0.0,
         "base_lr": args.lr if args.step_size_lr is None else args.step_size_lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)


def _total_steps(args: TrainArgs, n_train: int) -> tuple[int, int]:
    steps_per_epoch = math.ceil(n_train / args.meta_batch_size)
    total = steps_per_epoch * args.epochs
    if args.max_steps:
        total = min(total, args.max_steps) if args.epochs > 1 else args.max_steps
    return steps_per_epoch, total


def _schedule(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return 0.01 + 0.99 * step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _autocast(args: TrainArgs, device: str):
    """bf16 autocast on a GPU or an AMX CPU (`auto`), or when asked (`on`).

    On AVX512-BF16 CPUs (AMD Zen 4/5) `--bf16 on` is 2.4x faster (bench/train_bench.py), but whether
    bf16 changes what a second-order run learns was not measured, so `auto` leaves it off there.
    """
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    native = resolve_dtype("auto", device) == "bfloat16" if kind == "cuda" else cpu_has_amx()
    enabled = args.bf16 == "on" or (args.bf16 == "auto" and native)
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)


def _resume(args: TrainArgs, output: Path, learner: Learner, optimizer: torch.optim.Optimizer, log) -> tuple[int, dict]:
    """(step, best) of `output/last` with `--resume`, its weights and optimizer state loaded; else a fresh start."""
    if args.resume and (output / "last" / "trainer_state.json").is_file():
        saved = learner.read_meta(output / "last").get("config", {}).get("doc_update", "shared")
        if args.doc_update and args.doc_update != saved:
            raise UsageError(f"--doc-update {args.doc_update}: {output / 'last'} was trained with {saved}; resume "
                             "it with that, or start a new run")
        learner.config.doc_update = saved
        learner.load_weights(output / "last")
        step, best = _load_training_state(output / "last", optimizer)
        log(f"resumed from {output / 'last'} at step {step}")
        return step, best
    return 0, {"f1": -1.0, "loss": math.inf, "step": 0}


# --------------------------------------------------------------------------------------- one step
def _next_batch(order: list[int], step: int, steps_per_epoch: int, args: TrainArgs) -> list[int]:
    """The training indices of meta-batch `step`.

    `--sampler epoch`: batch `within` of the pass's own permutation, `Random(seed + pass)` over the
    questions: every question once per pass, and a function of `step` alone (a resumed run draws what the
    whole run would have). `reshuffle` (every shipped run): `order` is shuffled in place at every step by a
    fresh `Random(seed + pass)`, so a batch can repeat a question of the same pass and the order depends on
    the steps run in this process; kept so that the shipped recipe reproduces.
    """
    epoch, within = divmod(step, steps_per_epoch)
    if args.sampler == "epoch":
        order = list(range(len(order)))
    random.Random(args.seed + epoch).shuffle(order)
    return order[within * args.meta_batch_size : (within + 1) * args.meta_batch_size]


def task_at_k(record: AugmentedRecord, step: int, args: TrainArgs) -> AugmentedRecord:
    """`record` as meta-batch `step` trains it: with `--task-k`, its top K passages for a K drawn from
    `Random(f"{seed}:{step}:{id}")` (the same on every process and on resume); else as it is."""
    if not args.task_k:
        return record
    k = random.Random(f"{args.seed}:{step}:{record.id}").choice(args.task_k)
    return replace(record, passages=record.passages[:k])


def _set_learning_rates(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * _schedule(step, total_steps, warmup)


def meta_step(learner: Learner, records: list[AugmentedRecord], args: TrainArgs, scale: float,
              composition: TaskComposition | None = None) -> float:
    """Accumulate the meta-gradient of `records` (× `scale`) into .grad; returns the summed loss × scale.
    `composition`: how each task's passage gradients are combined (None: the plain sum)."""
    from offline_tools.training.meta import (
        inner_delta,
        outer_loss,
        outer_losses,
        task_deltas,
        task_passages,
        task_weights,
    )

    if not records:
        return 0.0
    create_graph = not args.first_order

    def temperature():  # a fresh graph node per backward (a learned T is exp of a parameter)
        return composition.temperature() if composition is not None else None

    top_k = args.train_k()
    likelihoods = composition.likelihoods(learner, records, top_k) if composition is not None \
        else [None] * len(records)
    total = composition.total if composition is not None else None
    batched = args.batched == "on" or (args.batched == "auto" and learner.device.type == "cuda")
    if batched:  # on a CPU, padding short passages to the longest costs more than batching saves
        deltas = task_deltas(learner, [task_passages(r, top_k) for r in records], create_graph,
                             [task_weights(r, top_k, temperature(), ell, total)
                              for r, ell in zip(records, likelihoods)])
        loss = outer_losses(learner, records, deltas, args.blind, top_k, args.answer_end).sum() * scale
        loss.backward()
        return float(loss.detach())
    meta_loss = 0.0
    for record, ell in zip(records, likelihoods):  # one task at a time: the CPU default
        delta = inner_delta(learner, task_passages(record, top_k), create_graph,
                            task_weights(record, top_k, temperature(), ell, total))
        loss = outer_loss(learner, record, delta, args.blind, top_k, args.answer_end) * scale
        loss.backward()
        meta_loss += float(loss.detach())
    return meta_loss


def _sum_across_processes(learner: Learner, meta_loss: float) -> float:
    """All-reduce (sum) the meta-gradients of every trainable tensor, and the logged loss."""
    import torch
    import torch.distributed as dist

    for p in learner.trainable_parameters():
        if p.grad is None:  # this process had no task in the meta-batch
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
    total = torch.tensor([meta_loss], device=learner.device)
    dist.all_reduce(total)
    return float(total)


def _train_step(learner: Learner, optimizer: torch.optim.Optimizer, mine: list[AugmentedRecord], args: TrainArgs,
                autocast, scale: float, world: int, composition: TaskComposition) -> float:
    """One optimizer step: this process's tasks `mine` of a meta-batch (each loss × `scale`), the
    meta-gradients summed across processes, clipped, AdamW. Returns the meta-batch's loss."""
    import torch

    with autocast:
        meta_loss = meta_step(learner, mine, args, scale=scale, composition=composition)
    if world > 1:
        meta_loss = _sum_across_processes(learner, meta_loss)
    clipped = [*learner.trainable_parameters(), *([composition.log_temperature] if composition.learn else [])]
    torch.nn.utils.clip_grad_norm_(clipped, args.clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    learner.composition = composition.spec()  # saved with every checkpoint: the learner's served default
    return meta_loss


# ------------------------------------------------------------------------------------- validation
def validate(learner: Learner, records: list[AugmentedRecord], args: TrainArgs) -> dict:
    """Diagnostics on the dev records: is the learner using the passages' gradients?

    loss / loss_closed: answer loss with the gradients (γ = 1) and without them (γ = 0);
    gain = loss_closed − loss. em/f1 with the gradients (ReGrad, or ReGrad + context when not
    blind) and em_closed/f1_closed without (closed-book). alpha_*: the step sizes;
    update_norm: mean ‖α ⊙ G‖ over the records.
    """
    import torch

    from engine.composition import Composition
    from models import AnswerRequest, generate_answers, passage_gradients, summed_gradient
    from offline_tools.training.meta import _context, outer_losses, task_likelihoods, task_passages, task_weights

    spec = Composition.parse(learner.composition or args.composition)
    temperature = spec.temperature if spec.kind != "sum" else None

    def combined(record: AugmentedRecord) -> torch.Tensor:
        passages = task_passages(record, args.top_k)
        likelihoods = task_likelihoods(learner, [record], args.top_k)[0] if spec.needs_likelihood else None
        weights = task_weights(record, args.top_k, temperature, likelihoods, spec.total)
        if weights is None:
            return summed_gradient(learner, passages)
        return (passage_gradients(learner, passages) * weights.float().cpu()[:, None]).sum(0)

    with torch.no_grad():
        alpha = learner.step_size_vector().detach()
        gradients = [combined(r).to(alpha.device) for r in records]
        deltas = torch.stack([-alpha * g for g in gradients])                                  # (n, D)
        with_g, without_g = [], []
        for start in range(0, len(records), 8):
            chunk = records[start : start + 8]
            with_g += outer_losses(learner, chunk, deltas[start : start + 8], args.blind, args.top_k,
                                   args.answer_end).tolist()
            without_g += outer_losses(learner, chunk, None, args.blind, args.top_k, args.answer_end).tolist()
        adapted = [AnswerRequest(r.question, r.answer_type, r.choices, context=_context(r, args.top_k, args.blind),
                                 gradient=g) for r, g in zip(records, gradients)]
        closed = [AnswerRequest(r.question, r.answer_type, r.choices) for r in records]
        result = {}
        for name, requests in (("", adapted), ("_closed", closed)):
            answers: list[str] = []
            for start in range(0, len(requests), 8):
                answers += generate_answers(learner, requests[start : start + 8], max_new_tokens=args.max_new_tokens)
            table = aggregate((r.dataset, score(a, r.answers, r.answer_type, r.choices))
                              for r, a in zip(records, answers))
            result[f"em{name}"], result[f"f1{name}"] = table.overall_micro.em, table.overall_micro.f1
        loss, loss_closed = sum(with_g) / len(with_g), sum(without_g) / len(without_g)
        per_tensor = torch.stack([a.detach().float().mean() for a in learner.step_size_tensors().values()])
        return {
            "loss": loss, "loss_closed": loss_closed, "gain": loss_closed - loss, **result,
            "alpha_mean": float(per_tensor.mean()), "alpha_min": float(per_tensor.min()),
            "alpha_max": float(per_tensor.max()), "update_norm": float(deltas.norm(dim=1).mean()),
            "n": len(records),
        }


def describe_validation(result: dict) -> str:
    """One line a person can read at a glance: does applying the gradients help?"""
    return (f"step {result['step']}: answer loss {result['loss_closed']:.3f} -> {result['loss']:.3f} with gradients "
            f"(gain {result['gain']:+.3f}); EM {result['em']:.1f} vs closed-book {result['em_closed']:.1f}, "
            f"F1 {result['f1']:.1f} vs {result['f1_closed']:.1f}; alpha mean {result['alpha_mean']:.3g} "
            f"[{result['alpha_min']:.3g}, {result['alpha_max']:.3g}], |alpha*G| {result['update_norm']:.3g}")


def _evaluate(learner: Learner, dev_records: list[AugmentedRecord], args: TrainArgs, step: int,
              run_log: _RunLog) -> dict:
    """Validate at `step`, log the result (file, one printed line) and return it."""
    result = {"step": step, "tasks_seen": step * args.meta_batch_size, **validate(learner, dev_records, args)}
    run_log.validation(result)
    return result


# ------------------------------------------------------------------------------------ checkpoints
def _is_better(result: dict, best: dict) -> bool:
    """Higher validation F1; ties → lower answer loss."""
    return (result["f1"], -result["loss"]) > (best["f1"], -best["loss"])


def _save_best(learner: Learner, output: Path, result: dict) -> dict:
    learner.save(output / "best")
    return {"f1": result["f1"], "loss": result["loss"], "step": result["step"]}


def _save_last(learner: Learner, optimizer: torch.optim.Optimizer, output: Path, step: int, best: dict) -> None:
    """`output/last`: the learner, the optimizer state and (step, best), for `--resume`."""
    learner.save(output / "last")
    _save_training_state(output / "last", optimizer, step, best)


def _save_training_state(directory: Path, optimizer: torch.optim.Optimizer, step: int, best: dict) -> None:
    from safetensors.torch import save_file

    tensors, meta = {}, {"step": step, "best": best, "param_steps": []}
    for i, group_param in enumerate(p for g in optimizer.param_groups for p in g["params"]):
        state = optimizer.state.get(group_param, {})
        if "exp_avg" in state:
            tensors[f"exp_avg.{i}"] = state["exp_avg"].detach().cpu().contiguous()
            tensors[f"exp_avg_sq.{i}"] = state["exp_avg_sq"].detach().cpu().contiguous()
            meta["param_steps"].append([i, float(state["step"])])
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "trainer_state.json").write_text(json.dumps(meta, indent=2))


def _load_training_state(directory: Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    import torch
    from safetensors.torch import load_file

    meta = json.loads((directory / "trainer_state.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, step in meta["param_steps"]:
        p = params[i]
        optimizer.state[p] = {
            "step": torch.tensor(step),
            "exp_avg": tensors[f"exp_avg.{i}"].to(p.device),
            "exp_avg_sq": tensors[f"exp_avg_sq.{i}"].to(p.device),
        }
    return int(meta["step"]), meta["best"]


# ---------------------------------------------------------------------------------------- logging
class _RunLog:
    """The main process's record of a run: `train_args.json`, one JSON event a line in
    `training_log.jsonl` (train / validation / done), a printed line per validation, the validations."""

    def __init__(self, output: Path, args: TrainArgs, log) -> None:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_args.json").write_text(json.dumps(asdict(args), indent=2))
        self.file = (output / "training_log.jsonl").open("a")
        self.log = log
        self.validations: list[dict] = []

    def event(self, **fields: Any) -> None:
        self.file.write(json.dumps(fields) + "\n")
        self.file.flush()

    def train_step(self, step: int, meta_loss: float, optimizer: torch.optim.Optimizer, seconds: float) -> None:
        self.event(event="train", step=step, loss=meta_loss, lr=optimizer.param_groups[0]["lr"],
                   step_size_lr=optimizer.param_groups[-1]["lr"], s_per_step=seconds)

    def validation(self, result: dict) -> None:
        self.event(event="validation", **result)
        self.log(describe_validation(result))
        self.validations.append(result)

    def close(self, best: dict) -> None:
        self.event(event="done", best=best)
        self.file.close()


def _progress_bar(total_steps: int, step: int, is_main: bool) -> tqdm:
    from tqdm import tqdm

    return tqdm(total=total_steps, initial=step, desc="meta-train", unit="step", disable=not is_main)


def _show_progress(bar: tqdm, meta_loss: float, validations: list[dict]) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{meta_loss:.3f}", gain=f"{validations[-1]['gain']:+.2f}" if validations else "-")


def _plot(output: Path) -> None:
    from offline_tools.training.plots import plot_training_log

    plot_training_log(output / "training_log.jsonl", output / "training_curves.png")


def _write_summary(output: Path, summary: dict) -> dict:
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(output)
    return summary


def _check_answer_end(learner: Learner, token: str) -> None:
    from models.decoding import end_of_turn_id

    try:
        end_of_turn_id(learner.tokenizer, token)
    except ValueError as error:
        raise UsageError(f"--answer-end {token}: {error}") from None


# ------------------------------------------------------------------------------------------ train
def train(args: TrainArgs, log=print) -> dict:
    """Run meta-training; returns a summary (steps, losses, validations, best, wall time).

    Writes `output_dir/best/` (best validation F1, ties → lower loss), `output_dir/last/`
    (learner + optimizer state, for `resume`), `output_dir/training_log.jsonl`,
    `output_dir/training_curves.png`, `train_args.json` and `summary.json`.
    """
    state = _processes()
    is_main, world, rank = state.is_main_process, state.num_processes, state.process_index
    started = time.perf_counter()
    output = _prepare_output(args, state)
    _seed(args.seed)
    train_records, dev_records = _load_data(args)
    device = _device(args, state)
    learner = _learner(args, device)
    _check_answer_end(learner, args.answer_end)
    composition = TaskComposition(args.composition, args.learn_temperature, device)
    if args.resume and (output / "last" / "learner.json").is_file():
        composition.start_from(learner.read_meta(output / "last").get("composition"))
    learner.composition = composition.spec()
    optimizer = _optimizer(learner, args, composition)
    steps_per_epoch, total_steps = _total_steps(args, len(train_records))
    warmup = int(args.warmup_ratio * total_steps)
    step, best = _resume(args, output, learner, optimizer, log)
    run_log = _RunLog(output, args, log) if is_main else None
    validations = run_log.validations if is_main else []

    initial = None
    if step == 0 and is_main:
        initial = _evaluate(learner, dev_records, args, step, run_log)
        best = _save_best(learner, output, initial)
    order = list(range(len(train_records)))
    autocast = _autocast(args, device)
    bar = _progress_bar(total_steps, step, is_main)
    losses: list[float] = []
    step_started = time.perf_counter()
    end = total_steps if args.stop_after is None else min(total_steps, args.stop_after)
    while step < end:
        batch = _next_batch(order, step, steps_per_epoch, args)
        _set_learning_rates(optimizer, step, total_steps, warmup)
        mine = [task_at_k(train_records[i], step, args) for i in batch[rank::world]]
        meta_loss = _train_step(learner, optimizer, mine, args, autocast, scale=1.0 / len(batch), world=world,
                                composition=composition)
        step += 1
        losses.append(meta_loss)
        _show_progress(bar, meta_loss, validations)
        if not is_main:
            continue
        run_log.train_step(step, meta_loss, optimizer, time.perf_counter() - step_started)
        step_started = time.perf_counter()
        if step % args.eval_every == 0 or step == end:
            result = _evaluate(learner, dev_records, args, step, run_log)
            if _is_better(result, best):
                best = _save_best(learner, output, result)
            _save_last(learner, optimizer, output, step, best)
            _plot(output)
            step_started = time.perf_counter()
    bar.close()
    if not is_main:
        return {"steps": step, "rank": rank}
    run_log.close(best)
    return _write_summary(output, {
        "steps": step, "best": best, "initial": initial, "final": validations[-1] if validations else None,
        "train_examples": len(train_records), "dev_examples": len(dev_records),
        "wall_s": time.perf_counter() - started, "checkpoint": str(output / "best"),
        "mean_train_loss": sum(losses) / max(1, len(losses)),
    })
