"""Meta-training (the reference's bi-level objective, with its inconsistencies fixed).

The objective is in `offline_tools/meta.py`: G = Σ_i ∇θ NTP(passage_i), θ' = θ − α ⊙ G, outer
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
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from models import AnswerRequest, Learner, generate_answers, summed_gradient
from models.base import cpu_has_amx, resolve_device, resolve_dtype
from offline_tools.augmented import AugmentedRecord, read_augmented
from offline_tools.errors import InputFileError, UsageError
from offline_tools.meta import (
    _context,
    answer_target,
    inner_delta,
    outer_loss,
    outer_losses,
    task_deltas,
    task_passages,
)
from offline_tools.metrics import aggregate, score

__all__ = ["TrainArgs", "train", "task_passages", "answer_target", "outer_loss", "validate"]


@dataclass
class TrainArgs:
    output_dir: str
    train_files: list[str]
    dev_files: list[str]
    preset: str = "smollm2-135m-instruct"
    top_k: int = 3
    blind: bool = True  # False: passages also in the prompt (ReGrad + context)
    meta_batch_size: int = 4
    lr: float = 4e-4
    step_size_lr: float | None = 1e-2   # None: the LoRA lr (the paper's single lr)
    weight_decay: float = 0.01  # LoRA only; the step sizes are not decayed
    warmup_ratio: float = 0.1
    clip_norm: float = 0.5
    epochs: int = 1
    max_steps: int | None = None
    max_train_examples: int | None = None
    max_eval_examples: int = 32
    eval_every: int = 25
    max_new_tokens: int = 16
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    first_order: bool = False         # FOMAML: no Hessian-vector products (cheaper; learns far less, see docs)
    batched: str = "auto"             # one forward for a meta-batch's passages / prompts: auto = on GPUs only
    bf16: str = "auto"                # autocast: "auto" (GPU or AMX CPU), "on", "off"

    def __post_init__(self) -> None:
        checks = {
            "top_k": self.top_k >= 1, "meta_batch_size": self.meta_batch_size >= 1, "lr": self.lr > 0,
            "step_size_lr": self.step_size_lr is None or self.step_size_lr >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1, "clip_norm": self.clip_norm > 0,
            "epochs": self.epochs >= 1, "max_steps": self.max_steps is None or self.max_steps >= 1,
            "eval_every": self.eval_every >= 1, "max_eval_examples": self.max_eval_examples >= 1,
            "bf16": self.bf16 in ("auto", "on", "off"), "batched": self.batched in ("auto", "on", "off"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"invalid training option(s): {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")


def _schedule(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return 0.01 + 0.99 * step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _load_records(paths: list[str], limit: int | None) -> list[AugmentedRecord]:
    records: list[AugmentedRecord] = []
    for path in paths:
        records.extend(read_augmented(path))
    if not records:
        raise InputFileError(paths[0] if paths else "(none)", "holds no records to train on")
    return records[:limit] if limit else records


@torch.no_grad()
def validate(learner: Learner, records: list[AugmentedRecord], args: TrainArgs) -> dict:
    """Diagnostics on the dev records: is the learner using the passages' gradients?

    loss / loss_closed: answer loss with the gradients (γ = 1) and without them (γ = 0);
    gain = loss_closed − loss. em/f1 with the gradients (ReGrad, or ReGrad + context when not
    blind) and em_closed/f1_closed without (closed-book). alpha_*: the step sizes;
    update_norm: mean ‖α ⊙ G‖ over the records.
    """
    alpha = learner.step_size_vector().detach()
    gradients = [summed_gradient(learner, task_passages(r, args.top_k)).to(alpha.device) for r in records]
    deltas = torch.stack([-alpha * g for g in gradients])                                  # (n, D)
    with_g, without_g = [], []
    for start in range(0, len(records), 8):
        chunk = records[start : start + 8]
        with_g += outer_losses(learner, chunk, deltas[start : start + 8], args.blind, args.top_k).tolist()
        without_g += outer_losses(learner, chunk, None, args.blind, args.top_k).tolist()
    adapted = [AnswerRequest(r.question, r.answer_type, r.choices, context=_context(r, args.top_k, args.blind),
                             gradient=g) for r, g in zip(records, gradients)]
    closed = [AnswerRequest(r.question, r.answer_type, r.choices) for r in records]
    result = {}
    for name, requests in (("", adapted), ("_closed", closed)):
        answers: list[str] = []
        for start in range(0, len(requests), 8):
            answers += generate_answers(learner, requests[start : start + 8], max_new_tokens=args.max_new_tokens)
        table = aggregate((r.dataset, score(a, r.answers, r.answer_type, r.choices)) for r, a in zip(records, answers))
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


def _sum_across_processes(learner: Learner, meta_loss: float) -> float:
    """All-reduce (sum) the meta-gradients of every trainable tensor, and the logged loss."""
    import torch.distributed as dist

    for p in learner.trainable_parameters():
        if p.grad is None:  # this process had no task in the meta-batch
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
    total = torch.tensor([meta_loss], device=learner.device)
    dist.all_reduce(total)
    return float(total)


def _autocast(args: TrainArgs, device: str):
    """bf16 autocast on a GPU or an AMX CPU (`auto`), or when asked (`on`).

    On AVX512-BF16 CPUs (AMD Zen 4/5) `--bf16 on` is 2.4x faster (bench/train_bench.py), but whether
    bf16 changes what a second-order run learns was not measured, so `auto` leaves it off there.
    """
    kind = "cuda" if device.startswith("cuda") else "cpu"
    native = resolve_dtype("auto", device) == "bfloat16" if kind == "cuda" else cpu_has_amx()
    enabled = args.bf16 == "on" or (args.bf16 == "auto" and native)
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)


def _optimizer(learner: Learner, args: TrainArgs) -> torch.optim.AdamW:
    """LoRA with weight decay at `lr`; the step sizes in their own group, no decay, at `step_size_lr`."""
    groups = [
        {"params": list(learner.lora_tensors().values()), "weight_decay": args.weight_decay, "base_lr": args.lr},
        {"params": list(learner.step_sizes.parameters()), "weight_decay": 0.0,
         "base_lr": args.lr if args.step_size_lr is None else args.step_size_lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)


def meta_step(learner: Learner, records: list[AugmentedRecord], args: TrainArgs, scale: float) -> float:
    """Accumulate the meta-gradient of `records` (× `scale`) into .grad; returns the summed loss × scale."""
    if not records:
        return 0.0
    create_graph = not args.first_order
    batched = args.batched == "on" or (args.batched == "auto" and learner.device.type == "cuda")
    if batched:  # on a CPU, padding short passages to the longest costs more than batching saves
        deltas = task_deltas(learner, [task_passages(r, args.top_k) for r in records], create_graph)
        loss = outer_losses(learner, records, deltas, args.blind, args.top_k).sum() * scale
        loss.backward()
        return float(loss.detach())
    total = 0.0
    for record in records:  # one task at a time: the CPU default
        delta = inner_delta(learner, task_passages(record, args.top_k), create_graph)
        loss = outer_loss(learner, record, delta, args.blind, args.top_k) * scale
        loss.backward()
        total += float(loss.detach())
    return total


def _check_splits(train_records: list[AugmentedRecord], dev_records: list[AugmentedRecord]) -> None:
    overlap = {r.id for r in train_records} & {r.id for r in dev_records}
    if overlap:
        raise UsageError(
            f"{len(overlap)} validation question(s) are also in the training files "
            f"(e.g. {sorted(overlap)[0]!r}); validation must be a separate split"
        )


def _total_steps(args: TrainArgs, n_train: int) -> tuple[int, int]:
    steps_per_epoch = math.ceil(n_train / args.meta_batch_size)
    total = steps_per_epoch * args.epochs
    if args.max_steps:
        total = min(total, args.max_steps) if args.epochs > 1 else args.max_steps
    return steps_per_epoch, total


def train(args: TrainArgs, log=print) -> dict:
    """Run meta-training; returns a summary (steps, losses, validations, best, wall time).

    Writes `output_dir/best/` (best validation F1, ties → lower loss), `output_dir/last/`
    (learner + optimizer state, for `resume`), `output_dir/training_log.jsonl`,
    `output_dir/training_curves.png`, `train_args.json` and `summary.json`.
    """
    from accelerate import PartialState

    from models import load_preset

    # Under `accelerate launch` every process takes its share of each meta-batch and the
    # meta-gradients are summed across processes (DDP cannot wrap a double backward); a plain
    # `regrad train` is one process and this is a no-op.
    state = PartialState()
    is_main, world, rank = state.is_main_process, state.num_processes, state.process_index
    started = time.perf_counter()
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()) and not args.resume:
        raise UsageError(f"output folder {output} is not empty; pass --resume to continue, or choose a new folder")
    state.wait_for_everyone()  # every process has checked before the main one writes there
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train_records = _load_records(args.train_files, args.max_train_examples)
    dev_records = _load_records(args.dev_files, args.max_eval_examples)
    _check_splits(train_records, dev_records)

    device = str(state.device) if world > 1 else resolve_device(args.device)
    learner = Learner.create(load_preset(args.preset), device=device,
                             dtype="bfloat16" if device.startswith("cuda") else "float32", seed=args.seed)
    optimizer = _optimizer(learner, args)
    steps_per_epoch, total_steps = _total_steps(args, len(train_records))
    warmup = int(args.warmup_ratio * total_steps)

    step, best = 0, {"f1": -1.0, "loss": math.inf, "step": 0}
    if args.resume and (output / "last" / "trainer_state.json").is_file():
        learner.load_weights(output / "last")
        step, best = _load_training_state(output / "last", optimizer)
        log(f"resumed from {output / 'last'} at step {step}")
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_args.json").write_text(json.dumps(asdict(args), indent=2))
    log_file = (output / "training_log.jsonl").open("a") if is_main else None
    validations: list[dict] = []

    def record_eval(at_step: int) -> dict:
        result = {"step": at_step, "tasks_seen": at_step * args.meta_batch_size,
                  **validate(learner, dev_records, args)}
        log_file.write(json.dumps({"event": "validation", **result}) + "\n")
        log_file.flush()
        log(describe_validation(result))
        validations.append(result)
        return result

    initial = record_eval(step) if step == 0 and is_main else None
    if initial is not None:
        best = {"f1": initial["f1"], "loss": initial["loss"], "step": 0}
        learner.save(output / "best")
    order = list(range(len(train_records)))
    autocast = _autocast(args, device)
    bar = tqdm(total=total_steps, initial=step, desc="meta-train", unit="step", disable=not is_main)
    window: list[float] = []
    step_started = time.perf_counter()
    while step < total_steps:
        epoch, within = divmod(step, steps_per_epoch)
        random.Random(args.seed + epoch).shuffle(order)
        batch_ids = order[within * args.meta_batch_size : (within + 1) * args.meta_batch_size]
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * _schedule(step, total_steps, warmup)
        mine = [train_records[i] for i in batch_ids[rank::world]]
        with autocast:
            meta_loss = meta_step(learner, mine, args, scale=1.0 / len(batch_ids))
        if world > 1:
            meta_loss = _sum_across_processes(learner, meta_loss)
        torch.nn.utils.clip_grad_norm_(learner.trainable_parameters(), args.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window.append(meta_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{meta_loss:.3f}", gain=f"{validations[-1]['gain']:+.2f}" if validations else "-")
        if not is_main:
            continue
        log_file.write(json.dumps({
            "event": "train", "step": step, "loss": meta_loss, "lr": optimizer.param_groups[0]["lr"],
            "step_size_lr": optimizer.param_groups[-1]["lr"], "s_per_step": time.perf_counter() - step_started,
        }) + "\n")
        log_file.flush()
        step_started = time.perf_counter()
        if step % args.eval_every == 0 or step == total_steps:
            result = record_eval(step)
            if (result["f1"], -result["loss"]) > (best["f1"], -best["loss"]):
                best = {"f1": result["f1"], "loss": result["loss"], "step": step}
                learner.save(output / "best")
            learner.save(output / "last")
            _save_training_state(output / "last", optimizer, step, best)
            _plot(output)
            step_started = time.perf_counter()
    bar.close()
    if not is_main:
        return {"steps": step, "rank": rank}
    log_file.write(json.dumps({"event": "done", "best": best}) + "\n")
    log_file.close()
    summary = {
        "steps": step,
        "best": best,
        "initial": initial,
        "final": validations[-1] if validations else None,
        "train_examples": len(train_records),
        "dev_examples": len(dev_records),
        "wall_s": time.perf_counter() - started,
        "checkpoint": str(output / "best"),
        "mean_train_loss": sum(window) / max(1, len(window)),
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(output)
    return summary


def _plot(output: Path) -> None:
    from offline_tools.plots import plot_training_log

    plot_training_log(output / "training_log.jsonl", output / "training_curves.png")
