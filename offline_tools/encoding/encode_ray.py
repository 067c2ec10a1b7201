"""`regrad encode --ray auto|ADDRESS --workers N`: encode passages on a Ray cluster, then merge into one store.

The driver reads and deduplicates the passages exactly as the single-process `encode` does (same readers,
same ids), drops the ones already in the store or in a part of an earlier run, and hands the rest to Ray Data.
`map_batches` runs them through a pool of N actors (`PartEncoder`), each holding one learner (and one GPU
where the cluster has them). Each actor writes its own store *part*, `<store>.parts/<host>-<pid>-<uid>/`,
committing every batch atomically, so a killed run keeps every finished batch. At the end the driver merges
every part into the store (one atomic commit, `gradient_store.merge_stores`), verifies what it wrote, and
deletes the parts. A rerun of a killed command skips the ids found in the store and in the parts, so it
resumes where it stopped; a rerun killed during the merge finds the store as it was and merges again.

Parts must be visible to the driver at the end: on one machine they are; on a cluster put them on a shared
filesystem (`--parts-dir`), or copy them to one place and run `regrad store merge` (docs/encoding.md).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gradient_store import FingerprintMismatchError, GradientStore, merge_stores
from gradient_store.manifest import MANIFEST_NAME
from offline_tools.encoding.encode import EncodeArgs, default_batch_size, requested_passages, unique_passages
from offline_tools.errors import ExitStatus, MissingExtraError, RegradError, UsageError, import_extra

__all__ = ["encode_on_ray", "PartEncoder", "parts_dir_for", "LOCAL_OBJECT_STORE_BYTES"]

# The local cluster's shared-memory object store: it carries passage texts and ids, never gradients (the
# actors write those to their parts), so 1 GiB is plenty and leaves the machine's memory to the learners.
LOCAL_OBJECT_STORE_BYTES = 1 << 30
_TRASH = ".trash-"  # a part being deleted is renamed to this prefix first, so a half-deleted part is never read

# Test seam: tests/offline_tools/test_encode_ray.py sets this in a child process to SIGKILL the whole run (driver
# and local cluster) once encoded rows, already committed to their parts, have come back: a kill mid-run at a
# known point rather than a race with the clock.
_ROWS_HOOK: Callable[[int], None] | None = None


def parts_dir_for(store: str | os.PathLike) -> Path:
    """Where the parts of `store` live by default: `<store>.parts` beside it."""
    path = Path(store)
    return path.with_name(path.name + ".parts")


class PartEncoder:
    """A Ray Data actor: loads the learner once, encodes each batch and commits it to its own store part.

    Args:
        checkpoint: learner folder, readable on every node.
        parts_root: directory of the parts, readable and writable on every node.
        fingerprint, layout, codec, rows_per_shard: the target store's; each part is created alike.
        device: `auto`, `cpu` or `cuda` (resolved on the worker: `auto` is cuda where the actor has a GPU).
        batch_size: passages per backward; None: 16 on a GPU, 1 on a CPU (as `encode`).
    """

    def __init__(self, checkpoint: str, parts_root: str, fingerprint: str, layout: list[dict[str, Any]],
                 codec: str, rows_per_shard: int, device: str = "auto", batch_size: int | None = None) -> None:
        from models import Learner
        from models.base import resolve_device

        self.device = resolve_device(device)
        # The fingerprint the driver read: a checkpoint that differs on this node is refused here.
        self.learner = Learner.load(checkpoint, device=self.device, expect_fingerprint=fingerprint)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.host = socket.gethostname()
        self.name = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._create = {"path": Path(parts_root) / self.name, "layout": layout, "fingerprint": fingerprint,
                        "codec": codec, "rows_per_shard": rows_per_shard, "cache_bytes": 0}
        self.part: GradientStore | None = None  # created with the first batch: an idle actor leaves nothing

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from models import passage_gradients

        ids = [str(x) for x in batch["id"]]
        texts = [str(x) for x in batch["text"]]
        if self.part is None:
            self.part = GradientStore.create(**self._create)
        gradients = passage_gradients(self.learner, texts, batch_size=self.batch_size)
        with self.part.writer(on_duplicate="skip") as writer:  # one commit per batch: a kill loses one batch
            writer.append(ids, gradients)
        return {"id": ids, "part": [self.name] * len(ids), "host": [self.host] * len(ids)}


def _import_ray():
    ray = import_extra("ray", "ray", "`regrad encode --ray`")
    try:
        import ray.data  # noqa: F401 - Ray Data needs pyarrow and pandas, which `ray` alone does not bring
    except ModuleNotFoundError as e:
        raise MissingExtraError("`regrad encode --ray` (Ray Data)", e.name or "ray.data", "ray") from e
    return ray


def _reachable(address: str, timeout_s: float = 5.0) -> bool:
    """Whether something accepts TCP connections at `host:port` (ray.init would wait for a dead head forever)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _auto_address() -> str | None:
    """The cluster `ray.init(address="auto")` would join (RAY_ADDRESS, the last `ray start` on this machine, or a
    running head found by its process), or None when there is none."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # the lookup moved: fall back to the documented variable
        return os.environ.get("RAY_ADDRESS") or None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None


def _connect(ray, address: str, workers: int) -> bool:
    """Join the cluster at `address` (`auto`: a running one if any, else a new local one); True when this
    call connected (and the caller must shut down), False when Ray was already initialised."""
    if ray.is_initialized():
        return False
    if address.startswith("ray://"):
        raise UsageError(f"--ray {address}: Ray Client addresses are not supported (the driver must read the "
                         "parts); run the command on a node of the cluster with --ray auto or --ray HEAD:6379")
    target = _auto_address() if address == "auto" else address
    if target is None:
        # No cluster: a local one with N actors of one CPU each, plus one CPU so Ray Data's read and split
        # tasks are never starved.
        ray.init(address="local", num_cpus=workers + 1, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 include_dashboard=False, log_to_driver=False)
        return True
    if not _reachable(target):
        found = " (found through --ray auto: RAY_ADDRESS or the last `ray start` here)" if address == "auto" else ""
        raise RegradError(
            f"--ray {address}: no Ray cluster answers at {target}{found}; start one with `ray start --head`, "
            "clear a stale record with `ray stop` (or unset RAY_ADDRESS), or pass --ray auto with no cluster "
            "running to start a local one",
            exit_status=ExitStatus.UNAVAILABLE,
        )
    ray.init(address=target, log_to_driver=False)
    return True


def _check_resources(resources: dict[str, float], device: str, workers: int) -> bool:
    """Whether each actor takes a GPU; refuses a pool the cluster cannot hold (Ray would wait for it forever)."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "cuda" and gpus == 0:
        raise UsageError("--device cuda, but the Ray cluster has no GPU; add GPU nodes or use --device auto or cpu")
    use_gpu = device != "cpu" and gpus > 0
    have, kind = (gpus, "GPU") if use_gpu else (cpus, "CPU")
    if workers > have:
        raise UsageError(
            f"--workers {workers} asks for one {kind} per actor, but the Ray cluster has {have} {kind}(s); "
            f"pass --workers {have} or fewer, or add nodes"
        )
    return use_gpu


def _committed_parts(parts_root: Path) -> list[Path]:
    """Parts whose creation finished (a manifest is written last), oldest name first."""
    if not parts_root.is_dir():
        return []
    return sorted(p for p in parts_root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())


def _ids_in_parts(parts: list[Path], fingerprint: str, parts_root: Path) -> set[str]:
    ids: set[str] = set()
    for part in parts:
        try:
            with GradientStore.open(part, expect_fingerprint=fingerprint, cache_bytes=0) as store:
                ids.update(store.ids())
        except FingerprintMismatchError as e:
            raise RegradError(
                f"{part} is a part of an earlier encode with another learner (fingerprint {e.found[:16]}…); "
                f"merge it elsewhere with `regrad store merge` or delete {parts_root}, then rerun",
                exit_status=ExitStatus.MISMATCH,
            ) from e
    return ids


def _remove_parts(parts_root: Path) -> None:
    """Delete every part (renamed away first, so a kill mid-delete never leaves a half part to be read)."""
    if not parts_root.is_dir():
        return
    for path in sorted(parts_root.iterdir()):
        target = path
        if not path.name.startswith(_TRASH):
            target = parts_root / f"{_TRASH}{path.name}"
            os.replace(path, target)
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    parts_root.rmdir()


def _ray_error(ray, error: BaseException, parts_root: Path) -> RegradError:
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None else error
    last = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    return RegradError(
        f"a Ray worker failed: {type(cause).__name__}: {last}; every batch committed so far is kept in "
        f"{parts_root}: fix the cause and rerun the same command to resume"
    )


def encode_on_ray(args: EncodeArgs, address: str = "auto", workers: int = 2, parts_dir: str | None = None,
                  log=print) -> dict:
    """Encode the passages of `args` on a Ray cluster into `args.store`; returns counts and passages/s.

    Args:
        args: what `encode` takes (checkpoint, store, passages, codec, batch size, device, limit).
        address: `auto` (join a running cluster, else start a local one) or a cluster address
            (its head, `host:6379`).
        workers: actors in the pool, one learner each (one GPU each where the cluster has GPUs).
        parts_dir: where the workers write their parts; default `<store>.parts` (must be visible to every
            worker and to this process: a shared filesystem on a cluster).

    Example:
        >>> encode_on_ray(EncodeArgs(checkpoint="ckpt", store="store", passages_from=[],  # doctest: +SKIP
        ...                          corpus=["corpus.jsonl"]), address="auto", workers=2)
    """
    from models import Learner

    if not args.passages_from and not args.corpus:
        raise UsageError("nothing to encode: give --passages-from AUGMENTED.jsonl and/or --corpus FILE")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    ray = _import_ray()
    meta = Learner.read_meta(args.checkpoint)  # fingerprint and layout, without loading the model here
    fingerprint, layout = meta["fingerprint"], meta["layout"]
    parts_root = Path(parts_dir) if parts_dir else parts_dir_for(args.store)
    store = GradientStore.create(args.store, layout=layout, fingerprint=fingerprint, codec=args.codec,
                                 exist_ok=True, cache_bytes=0)
    rows_per_shard = store.rows_per_shard
    parts = _committed_parts(parts_root)
    in_parts = _ids_in_parts(parts, fingerprint, parts_root)
    todo, already, empty = unique_passages(requested_passages(args),
                                           lambda pid: pid in in_parts or store.contains(pid))
    store.close()
    if args.limit is not None:
        todo = todo[: args.limit]
    log(f"{len(todo)} passages to encode on Ray with {workers} worker(s) ({already} already in {args.store} "
        f"or its {len(parts)} part(s), {empty} empty skipped)")

    started = time.perf_counter()
    done, hosts, reported = 0, set(), set()
    startup_s, first_rows = 0.0, 0  # until the first batch came back: Ray start-up and the actors' model loads
    if todo:
        connected = _connect(ray, address, workers)
        try:
            use_gpu = _check_resources(ray.cluster_resources(), args.device, workers)
            batch_size = args.batch_size or default_batch_size("cuda" if use_gpu else "cpu")
            # Rows per Ray batch, each one commit of a part: a few batches per worker balance the pool, and
            # a part never buffers more than a shard.
            rows_per_batch = max(batch_size, min(rows_per_shard, math.ceil(len(todo) / (4 * workers))))
            parts_root.mkdir(parents=True, exist_ok=True)
            ray.data.DataContext.get_current().enable_progress_bars = False  # ours below counts passages
            dataset = ray.data.from_items([{"id": pid, "text": text} for pid, text in todo])
            encoded = dataset.map_batches(
                PartEncoder,
                fn_constructor_kwargs={
                    "checkpoint": str(Path(args.checkpoint).resolve()), "parts_root": str(parts_root.resolve()),
                    "fingerprint": fingerprint, "layout": layout, "codec": args.codec,
                    "rows_per_shard": rows_per_shard, "device": args.device, "batch_size": args.batch_size,
                },
                batch_size=rows_per_batch,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=1,
                num_gpus=1 if use_gpu else 0,
            )
            with tqdm(total=len(todo), desc="encode (ray)", unit="passage") as bar:
                for out in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                    if not done:
                        startup_s, first_rows = time.perf_counter() - started, len(out["id"])
                    done += len(out["id"])
                    if _ROWS_HOOK is not None:
                        _ROWS_HOOK(done)
                    reported.update(str(p) for p in out["part"])
                    hosts.update(str(h) for h in out["host"])
                    bar.update(len(out["id"]))
                    bar.set_postfix(rate=f"{done / max(1e-9, time.perf_counter() - started):.1f}/s")
        except ray.exceptions.RayError as e:
            raise _ray_error(ray, e, parts_root) from e
        finally:
            if connected:
                ray.shutdown()
    encode_s = time.perf_counter() - started

    unseen = sorted(reported - {p.name for p in _committed_parts(parts_root)})
    if unseen:
        raise RegradError(
            f"{len(unseen)} part(s) written by the workers ({', '.join(unseen[:3])}) are not under {parts_root} "
            f"on this machine (workers ran on {', '.join(sorted(hosts))}): put --parts-dir on a filesystem every "
            f"node shares, or copy the parts here and run `regrad store merge PART... --into {args.store} "
            "--on-duplicate skip`"
        )
    merged = _merge_and_verify(parts_root, args.store, fingerprint)
    elapsed = time.perf_counter() - started
    return {
        "encoded": done,
        "already_stored": already,
        "empty_skipped": empty,
        "store_rows": merged["store_rows"],
        "parts_merged": merged["parts"],
        "rows_merged": merged["rows"],
        "workers": workers,
        "hosts": sorted(hosts),
        "startup_seconds": startup_s,
        "first_batch_rows": first_rows,
        "encode_seconds": encode_s,
        "seconds": elapsed,
        "passages_per_s": done / elapsed if elapsed > 0 else 0.0,
    }


def _merge_and_verify(parts_root: Path, store_path: str, fingerprint: str) -> dict[str, int]:
    """Merge every committed part into the store (one commit), verify the new shards, delete the parts."""
    parts = _committed_parts(parts_root)
    with GradientStore.open(store_path, expect_fingerprint=fingerprint, cache_bytes=0) as store:
        before = {s.shard_id for s in store.shards()}
    rows = 0
    if parts:
        # skip: a part of a run killed after its merge committed (or a batch retried by Ray) repeats ids.
        rows = merge_stores(parts, store_path, on_duplicate="skip").rows_copied
    with GradientStore.open(store_path, expect_fingerprint=fingerprint, cache_bytes=0) as store:
        new = {s.shard_id for s in store.shards()} - before
        report = store.verify(shard_ids=new)  # the index and manifest whole, the new shards' bytes
        total = len(store)
    if not report.ok:
        raise RegradError(
            f"gradient store {store_path} failed verification after merging {len(parts)} part(s): "
            f"{report.errors[0]}; the parts are kept in {parts_root}: run `regrad store verify {store_path}`",
            exit_status=ExitStatus.CORRUPT,
        )
    _remove_parts(parts_root)
    return {"parts": len(parts), "rows": rows, "store_rows": total}
