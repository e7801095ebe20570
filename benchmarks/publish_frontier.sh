#!/usr/bin/env bash
# Copy a finished frontier run (benchmarks/frontiers.sh) into docs/frontiers/SETTING: results.md, the
# plots, and results.json without its per-cell records (they hold every ROC curve: ~0.5 MB a cell; the
# cells stay in the run's cache).
#
#   benchmarks/publish_frontier.sh RUN_DIR SETTING
set -euo pipefail
run=${1:?usage: benchmarks/publish_frontier.sh RUN_DIR SETTING}
setting=${2:?usage: benchmarks/publish_frontier.sh RUN_DIR SETTING}
here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/docs/frontiers/$setting"
test -f "$run/results.json" || { echo "$run has no results.json: finish the run first" >&2; exit 2; }
mkdir -p "$dest"
cp "$run/results.md" "$run/frontier.png" "$run/privacy_utility.png" "$dest/"
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); r.pop("cells"); json.dump(r, open(sys.argv[2], "w"), indent=1)' \
    "$run/results.json" "$dest/results.json"
echo "published $run -> $dest"
