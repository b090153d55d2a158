#!/bin/bash
# `xbench stats --suite quick` of two checkouts on one finished store, alternating, on one machine: /tmp/old (the
# tree before #41) and this checkout, one venv, each on its own PYTHONPATH. Run from the folder holding xbench.db:
#   bash /path/to/benchmarks/stats/side_by_side.sh [ROUNDS]
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
V=${VENV:-$ROOT/.venv}/bin
ROUNDS=${1:-3}
for round in $(seq "$ROUNDS"); do
    for tree in /tmp/old "$ROOT"; do
        started=$(date +%s.%N)
        PYTHONPATH=$tree/src $V/python -c "from xbench.cli import entry_point; entry_point()" \
            stats --suite quick --format json >/dev/null || exit 1
        ended=$(date +%s.%N)
        echo "round $round $tree: $(echo "$ended - $started" | bc) s"
    done
done
