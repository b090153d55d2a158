#!/bin/bash
# `xbench stats --suite quick` of two checkouts on one finished study, alternating, on one machine: /tmp/old (the
# tree before #41) and this checkout, one venv, each on its own PYTHONPATH. The study is read from a bundle (`xbench
# export --suite quick --bundle DIR`; the old tree predates `dataset.explain_size`, so strip it from each
# cells/*/result.json first):
#   bash benchmarks/stats/side_by_side.sh BUNDLE [ROUNDS]
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
V=${VENV:-$ROOT/.venv}/bin
BUNDLE=$1
ROUNDS=${2:-3}
for round in $(seq "$ROUNDS"); do
    for tree in /tmp/old "$ROOT"; do
        started=$(date +%s.%N)
        PYTHONPATH=$tree/src $V/python -c "from xbench.cli import entry_point; entry_point()" \
            stats --suite quick --format json --from "$BUNDLE" >/dev/null || exit 1
        ended=$(date +%s.%N)
        echo "round $round $tree: $(echo "$ended - $started" | bc) s"
    done
done
