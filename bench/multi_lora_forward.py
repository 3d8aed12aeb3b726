"""Multi-LoRA forward benchmark: skillbank mixed batches vs the base, peft, N full models;
then act() latency p50/p99 at batch 1 and 8, idle and beside busy processes, vs the base.

Run: python bench/multi_lora_forward.py [--threads 2] [--quick] [--only latency] [--busy 1]
(the forward table is the same as `skillbank bench lora`)
"""

import argparse

from skillbank.recipes.bench_lora import run

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument(
        "--only", choices=["forward", "latency"], default=None, help="one of the two tables"
    )
    p.add_argument(
        "--busy", type=int, default=1, help="CPU-burning processes beside the loaded rows"
    )
    a = p.parse_args()
    run(threads=a.threads, quick=a.quick, only=a.only, busy=a.busy)
