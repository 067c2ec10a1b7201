"""Meta-training (the reference's bi-level objective, with its inconsistencies fixed).

For each task (a question, its answer and its k passages):

    G      = Σ_i ∇θ NTP(passage_i; θ)              inner gradient, create_graph=True
    θ'     = θ − α ⊙ G                             learnable step sizes α
    loss   = CE(answer tokens | prompt; θ')         outer loss, blind or with passages in the prompt

and AdamW on (θ, α) over meta-batches, warm-up then linear decay, clipping at `clip_norm`.
Fixes over the reference: one passage format and max length everywhere (`models.gradients`),
a validation file separate from any reported test split, deterministic targets (answers[0] of
a deterministic alias list), no weight decay on α, `fix` mode works, one forward per passage.
The adapted forward uses the same per-row path as serving (`Learner.adapted_rows`).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models import AnswerRequest, Learner, build_prompt, format_passage, generate_answers, summed_gradient
from models.base import resolve_device
from models.gradients import passage_losses, tokenize_passages
from offline_tools.augmented import AugmentedRecord, read_augmented
from offline_tools.errors import InputFileError, UsageError
from offline_tools.metrics import aggregate, score

__all__ = ["TrainArgs", "train", "task_passages", "answer_target", "outer_loss"]


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
    first_order: bool = False         # FOMAML: no Hessian-vector products (~2-3x cheaper; for quick CPU runs)


def task_passages(record: AugmentedRecord, top_k: int) -> list[str]:
    """The k passages of a task in the one canonical format; empty passages are skipped."""
    texts = [format_passage(p.title, p.text) for p in record.passages[:top_k]]
    return [t for t in texts if t.strip()]


def answer_target(record: AugmentedRecord) -> str:
    return record.answers[0]


def _context(record: AugmentedRecord, top_k: int, blind: bool):
    return None if blind else [(p.title, p.text) for p in record.passages[:top_k]]


def outer_loss(
    learner: Learner, record: AugmentedRecord, deltas: torch.Tensor | None, blind: bool, top_k: int
) -> torch.Tensor:
    """CE over the answer tokens (answer + end-of-turn) of the chat prompt, with row deltas applied."""
    tok = learner.tokenizer
    prompt = build_prompt(tok, record.question, record.answer_type, record.choices, _context(record, top_k, blind))
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tok(answer_target(record), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt_ids + target_ids], device=learner.device)
    with learner.adapted_rows(deltas):
        logits = learner.model(input_ids=ids).logits
    n = len(target_ids)
    return F.cross_entropy(logits[0, -n - 1 : -1].float(), ids[0, -n:])


def _inner_deltas(learner: Learner, passages: list[str], create_graph: bool) -> torch.Tensor | None:
    """−α ⊙ Σ_i ∇NTP(passage_i), flat (1, D); differentiable w.r.t. θ and α when create_graph."""
    if not passages:
        return None
    params = list(learner.lora_tensors().values())
    losses = passage_losses(learner, tokenize_passages(learner, passages))
    grads = torch.autograd.grad(losses.sum(), params, create_graph=create_graph, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
    return (-learner.step_size_vector() * flat)[None]


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
def evaluate(learner: Learner, records: list[AugmentedRecord], args: TrainArgs) -> dict:
    """Validation: outer loss and EM/F1 of ReGrad answers (γ = 1) on the dev records."""
    losses, items = [], []
    requests = []
    alpha = learner.step_size_vector().detach()
    for record in records:
        passages = task_passages(record, args.top_k)
        gradient = summed_gradient(learner, passages) if passages else None   # one backward, used twice
        deltas = None if gradient is None else (-alpha * gradient.to(alpha.device))[None]
        losses.append(float(outer_loss(learner, record, deltas, args.blind, args.top_k)))
        requests.append(AnswerRequest(record.question, record.answer_type, record.choices,
                                      context=_context(record, args.top_k, args.blind), gradient=gradient))
    answers = []
    for start in range(0, len(requests), 8):
        answers += generate_answers(learner, requests[start : start + 8], max_new_tokens=args.max_new_tokens)
    for record, answer in zip(records, answers):
        items.append((record.dataset, score(answer, record.answers, record.answer_type)))
    table = aggregate(items)
    overall = table.overall_micro
    return {"loss": sum(losses) / len(losses), "em": overall.em, "f1": overall.f1, "n": len(records)}


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


def train(args: TrainArgs, log=print) -> dict:
    """Run meta-training; returns a summary (steps, losses, best validation, wall time).

    Writes `output_dir/best/` (best validation F1, ties → lower loss), `output_dir/last/`
    (learner + optimizer state, for `resume`), `output_dir/training_log.jsonl` and `train_args.json`.
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
    overlap = {r.id for r in train_records} & {r.id for r in dev_records}
    if overlap:
        raise UsageError(
            f"{len(overlap)} validation question(s) are also in the training files "
            f"(e.g. {sorted(overlap)[0]!r}); validation must be a separate split"
        )

    device = str(state.device) if world > 1 else resolve_device(args.device)
    on_cuda = device.startswith("cuda")
    learner = Learner.create(
        load_preset(args.preset), device=device, dtype="bfloat16" if on_cuda else "float32", seed=args.seed
    )
    lora = list(learner.lora_tensors().values())
    optimizer = torch.optim.AdamW(
        [
            {"params": lora, "weight_decay": args.weight_decay},
            {"params": list(learner.step_sizes.parameters()), "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    steps_per_epoch = math.ceil(len(train_records) / args.meta_batch_size)
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps) if args.epochs > 1 else args.max_steps
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

    def record_eval(at_step: int) -> dict:
        result = evaluate(learner, dev_records, args)
        result["step"] = at_step
        log_file.write(json.dumps({"event": "validation", **result}) + "\n")
        log_file.flush()
        log(f"step {at_step}: validation loss {result['loss']:.4f}  EM {result['em']:.1f}  F1 {result['f1']:.1f}")
        return result

    initial = record_eval(step) if step == 0 and is_main else None
    if initial is not None:
        best = {"f1": initial["f1"], "loss": initial["loss"], "step": 0}
        learner.save(output / "best")
    order = list(range(len(train_records)))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda)
    bar = tqdm(total=total_steps, initial=step, desc="meta-train", unit="step", disable=not is_main)
    window: list[float] = []
    while step < total_steps:
        epoch, within = divmod(step, steps_per_epoch)
        random.Random(args.seed + epoch).shuffle(order)
        batch_ids = order[within * args.meta_batch_size : (within + 1) * args.meta_batch_size]
        for param_group in optimizer.param_groups:
            param_group["lr"] = args.lr * _schedule(step, total_steps, warmup)
        meta_loss = 0.0
        for idx in batch_ids[rank::world]:
            record = train_records[idx]
            with autocast:
                deltas = _inner_deltas(learner, task_passages(record, args.top_k), create_graph=not args.first_order)
                loss = outer_loss(learner, record, deltas, args.blind, args.top_k) / len(batch_ids)
            loss.backward()
            meta_loss += loss.detach().item()
        if world > 1:
            meta_loss = _sum_across_processes(learner, meta_loss)
        torch.nn.utils.clip_grad_norm_(learner.trainable_parameters(), args.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window.append(meta_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{meta_loss:.3f}")
        if not is_main:
            continue
        log_file.write(
            json.dumps({"event": "train", "step": step, "loss": meta_loss, "lr": optimizer.param_groups[0]["lr"]})
            + "\n"
        )
        if step % args.eval_every == 0 or step == total_steps:
            result = record_eval(step)
            if (result["f1"], -result["loss"]) > (best["f1"], -best["loss"]):
                best = {"f1": result["f1"], "loss": result["loss"], "step": step}
                learner.save(output / "best")
            learner.save(output / "last")
            _save_training_state(output / "last", optimizer, step, best)
    bar.close()
    if not is_main:
        return {"steps": step, "rank": rank}
    log_file.write(json.dumps({"event": "done", "best": best}) + "\n")
    log_file.close()
    summary = {
        "steps": step,
        "best": best,
        "initial": initial,
        "train_examples": len(train_records),
        "dev_examples": len(dev_records),
        "wall_s": time.perf_counter() - started,
        "checkpoint": str(output / "best"),
        "mean_train_loss": sum(window) / max(1, len(window)),
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
