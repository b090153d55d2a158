#!/bin/bash
# The test lanes of two checkouts, one after the other on one machine with nothing else running: /tmp/old (the tree
# before #27, 42faea8) and /tmp/new (HEAD), one venv, each on its own PYTHONPATH. Run from the repository root:
#   bash benchmarks/lanes/side_by_side.sh            # fast lanes (make test), then full lanes (make test-all = .ci/run)
#   LANES=fast bash benchmarks/lanes/side_by_side.sh # fast lanes only
# Each lane is what its Makefile target runs: the old tree's targets were pytest alone; the new ones run ruff check,
# ruff format --check and mypy first. Output: /tmp/sidebyside.log (and each lane's slowest tests: /tmp/lane-*.log).
V=${VENV:-$PWD/.venv}/bin
LANES=${LANES:-fast full}

lane() {  # tree, name, pytest marker expression ("" for all)
    local tree=$1 name=$2 marks=$3 started linted ended
    cd "/tmp/$tree" || exit 1
    started=$(date +%s)
    if [ "$tree" = new ]; then
        $V/ruff check src tests benchmarks docs >/dev/null && $V/ruff format --check src tests benchmarks docs >/dev/null \
            && PYTHONPATH=/tmp/new/src $V/mypy | tail -1
    fi
    linted=$(date +%s)
    # the slowest tests of each lane go to /tmp/lane-<tree>-<name>.log
    if [ -n "$marks" ]; then
        PYTHONPATH=/tmp/$tree/src $V/python -m pytest -q -m "$marks" -p no:cacheprovider --durations=30 \
            >"/tmp/lane-$tree-$name.log" 2>&1
    else
        PYTHONPATH=/tmp/$tree/src $V/python -m pytest -q -p no:cacheprovider --durations=30 >"/tmp/lane-$tree-$name.log" 2>&1
    fi
    tail -1 "/tmp/lane-$tree-$name.log"
    ended=$(date +%s)
    echo "$tree $name: $((ended - started)) s (lint and types $((linted - started)) s) at $(git -C "/tmp/$tree" log --oneline -1)"
}

{
    for which in $LANES; do
        if [ "$which" = fast ]; then
            lane old fast "not slow"
            lane new fast "not slow"
        else
            lane old full ""
            lane new full ""
        fi
    done
    echo done
} > /tmp/sidebyside.log 2>&1
