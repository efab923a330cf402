#!/bin/bash
# A Slurm array job whose tasks share one sweep through a PostgreSQL store.
#
# Every task runs examples/workers_sweep.py over the whole grid. The sweep decorates its
# function with stet.once(claim=True), so each run is started by one task only, and a
# run whose task died is taken over by another task once its lease has expired.
# Resubmitting the array after a time limit is safe: completed runs are skipped.
#
#   export STET_STORE_URL="postgresql://me@db.example.org/experiments?table=workers"
#   sbatch examples/slurm_array.sh
#
# Keep the password out of the URL (it would show in the process list): put it in
# ~/.pgpass on the cluster. Submit from the repository's top directory, with the Python
# environment that has stet activated: sbatch hands your environment to the tasks
# (--export=ALL is its default), and each task's output names the python it found.
#
# A file store (runs.csv, runs.sqlite) works too when every task runs on one node: file
# locks are not to be trusted across the machines of a shared file system.
#
# Arguments after the script go to workers_sweep.py after the store (LOG, SECONDS per
# run, number of KEYS; see its docstring). Options given to sbatch override the #SBATCH
# lines below, e.g. a small sweep of 24 runs by 4 tasks with a log of who ran what:
#
#   sbatch --array=0-3 --time=5 examples/slurm_array.sh sweep.log 0.1 24
#
#SBATCH --job-name=stet-sweep
#SBATCH --array=0-7
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=stet-sweep-%A_%a.out
set -euo pipefail

: "${STET_STORE_URL:?set STET_STORE_URL to a postgresql:// URL before calling sbatch}"
cd "${SLURM_SUBMIT_DIR:-.}"
echo "task ${SLURM_ARRAY_TASK_ID:-none} of job ${SLURM_ARRAY_JOB_ID:-none} on $(hostname) runs $(command -v python)"
python examples/workers_sweep.py "$STET_STORE_URL" "$@"
