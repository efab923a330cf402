"""A sweep on a Dask cluster whose workers record into one store.

    python examples/dask_sweep.py runs.sqlite
    python examples/dask_sweep.py runs.sqlite        # resumes: nothing runs again
    python examples/dask_sweep.py postgresql://user@host/db

Here the cluster is a LocalCluster of worker processes; with a real cluster (or Ray,
or a Slurm array) point every worker at a postgresql:// store instead of a file.
"""

import sys

from dask.distributed import Client, LocalCluster

import stet

STORE = sys.argv[1] if len(sys.argv) > 1 else "dask_runs.sqlite"


@stet.once(store=STORE, quiet=True)
def experiment(alpha: float, seed: int) -> float:
    return alpha * seed  # stands for an expensive computation


if __name__ == "__main__":
    grid = [(alpha, seed) for alpha in (0.1, 0.2, 0.5, 1.0) for seed in range(5)]
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(experiment, *zip(*grid, strict=True))
        results = client.gather(futures)
    ran = sum(result is not None for result in results)
    print(f"ran {ran} of {len(grid)} runs; {len(grid) - ran} were already done")
