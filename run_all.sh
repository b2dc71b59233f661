#!/usr/bin/env bash
# Re-execute every notebook headless with papermill, regenerating Tables 1-6 and Figure 1.
#   ./run_all.sh                                   # demo profile, CPU: outputs in results/, README refreshed
#   ./run_all.sh -p synthetic_seed 3               # another synthetic seed: outputs in results/demo-seed3/
#   ./run_all.sh --profile paper --device cuda     # outputs in results/paper/ (-p dataset hmdb51: results/paper-hmdb51/)
#   ./run_all.sh --only table1 table2 -p seeds "[0, 1, 2]"
# Options: --profile NAME, --only NAME..., --device DEV, -p NAME VALUE (repeatable), -f params.yaml, --debug,
# --at-once N (up to N notebooks side by side, each after those it needs: machines with more than 2 cores),
# --plan (print what the run needs, disk, RAM, GPU hours, and exit; docs/plan.md).
# A run of a profile other than demo first checks that its feature caches and checkpoints fit the disk (exit 2).
# Unknown parameter names and values of the wrong type are refused before any notebook runs (exit 2).
# Times per notebook (and normalised to the reference machine) go to <results folder>/benchmarks/run_all_<profile>.json.
set -euo pipefail
cd "$(dirname "$0")"
exec python -m twostream_lib.runner "$@"
