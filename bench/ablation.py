"""The ablation behind the meta-training defaults: first vs second order × step-size lr × meta-batch.

Each variant meta-trains the bundled preset from scratch for the same number of *tasks* on the
synthetic benchmark's train split and is validated on its dev split (unseen people), with the
diagnostics every `regrad train` validation reports: answer loss with and without the gradients,
the gain, EM with and without them, and the step sizes. Same data, seed and budget for all.

    python bench/ablation.py --data artifacts/method/aug --tasks 160

`--data` holds `synth_train.jsonl` and `synth_dev.jsonl` from `regrad augment --dataset synth`.
Last line: one JSON object with every variant's final validation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# ---- knobs ----------------------------------------------------------------------------------
VARIANTS = {
    # name: extra `regrad train` flags
    "paper: 2nd order, one lr 4e-4": ["--step-size-lr", "4e-4"],
    "1st order, alpha lr 1e-2": ["--first-order"],
    "2nd order, alpha lr 1e-2 (default)": [],
    "2nd order, alpha lr 1e-2, meta-batch 8": ["--meta-batch-size", "8"],
}
DEV_QUESTIONS = 24
# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--output", type=Path, default=Path("artifacts/ablation"))
    parser.add_argument("--tasks", type=int, default=160, help="training tasks per variant (steps × meta-batch)")
    parser.add_argument("--only", action="append", help="run only variants whose name contains this")
    args = parser.parse_args()
    results = {}
    for name, flags in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        batch = int(flags[flags.index("--meta-batch-size") + 1]) if "--meta-batch-size" in flags else 4
        steps = args.tasks // batch
        out = args.output / name.split(":")[0].replace(" ", "_").replace(",", "")
        command = [sys.executable, "-m", "cli", "train", "--train", str(args.data / "synth_train.jsonl"),
                   "--dev", str(args.data / "synth_dev.jsonl"), "--output", str(out), "--max-steps", str(steps),
                   "--eval-every", str(steps), "--max-eval-examples", str(DEV_QUESTIONS), *flags]
        if not (out / "summary.json").exists():
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        summary = json.loads((out / "summary.json").read_text())
        results[name] = {"steps": steps, "meta_batch": batch, **summary["final"]}
    header = f"{'variant':<40} {'loss γ=0':>9} {'loss γ=1':>9} {'gain':>7} {'EM':>6} {'EM cb':>6} {'α mean':>7}"
    print(header)
    for name, r in results.items():
        print(f"{name:<40} {r['loss_closed']:>9.3f} {r['loss']:>9.3f} {r['gain']:>+7.3f} {r['em']:>6.1f} "
              f"{r['em_closed']:>6.1f} {r['alpha_mean']:>7.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
