#!/usr/bin/env bash
# Re-execute every notebook headless with papermill, regenerating Tables 1-6 and Figure 1 into results/.
#   ./run_all.sh                         # demo profile, CPU, a few minutes
#   ./run_all.sh --profile paper --device cuda
#   ./run_all.sh --only table1 table2 -p seeds "[0, 1, 2]"
# Options: --profile NAME, --only NAME..., --device DEV, -p NAME VALUE (repeatable), -f params.yaml
set -euo pipefail
cd "$(dirname "$0")"
python -m twostream_lib.runner "$@"
python -m twostream_lib.tables
