#!/usr/bin/env bash
# Download, unpack and verify UCF101 / HMDB51 into this folder (needs internet; resumable).
#   data/fetch_datasets.sh ucf101                  # videos + official splits -> data/ucf101/
#   data/fetch_datasets.sh ucf101 hmdb51 --precomputed   # also the authors' jpegs_256 + tvl1_flow
#   data/fetch_datasets.sh --help
# A thin wrapper: everything happens in `python -m twostream_lib fetch` (twostream_lib/data/download.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
exec python -m twostream_lib fetch --root "$here" "$@"
