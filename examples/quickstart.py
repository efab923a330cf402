"""A small parameter sweep with stet: run it twice, the second run skips everything.

    python examples/quickstart.py        # runs 9 experiments, about 2 seconds
    python examples/quickstart.py        # skips all 9
    python -c "import stet; stet.status('quickstart_runs.csv')"

Delete quickstart_runs.csv (or call stet.reset) to start over.
"""

import math
import time

import stet


@stet.once(store="quickstart_runs.csv")
def experiment(alpha: float, seed: int) -> float:
    """Pretend to train something; write results wherever you like."""
    time.sleep(0.2)  # the expensive part
    score = math.exp(-alpha) * (1 + seed / 10)
    print(f"ran experiment(alpha={alpha}, seed={seed}) -> score {score:.3f}")
    return score


if __name__ == "__main__":
    for alpha in (0.1, 0.5, 1.0):
        for seed in (0, 1, 2):
            experiment(alpha, seed)
    stet.status("quickstart_runs.csv")
