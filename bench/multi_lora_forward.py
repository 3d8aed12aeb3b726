"""Multi-LoRA forward benchmark: skillbank mixed batches vs the base, peft, N full models.

Run: python bench/multi_lora_forward.py [--threads 2] [--quick]   (same as `skillbank bench lora`)
"""

import argparse

from skillbank.recipes.bench_lora import run

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    a = p.parse_args()
    run(threads=a.threads, quick=a.quick)
