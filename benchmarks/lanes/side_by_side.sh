#!/bin/bash
V=${VENV:-$PWD/.venv}/bin  # run from the repository root; /tmp/old and /tmp/new are the two checkouts
{
echo "old (42faea8) fast lane: pytest -m 'not slow'"
cd /tmp/old; s=$(date +%s); PYTHONPATH=/tmp/old/src $V/python -m pytest -q -m "not slow" -p no:cacheprovider 2>&1 | tail -1; e=$(date +%s); echo "old seconds: $((e-s))"
echo "new (HEAD) fast lane: ruff check, ruff format --check, mypy, pytest -m 'not slow'"
cd /tmp/new; s=$(date +%s); $V/ruff check src tests benchmarks docs >/dev/null && $V/ruff format --check src tests benchmarks docs >/dev/null && PYTHONPATH=/tmp/new/src $V/mypy 2>&1 | tail -1; m=$(date +%s); echo "new lint+types seconds: $((m-s))"; PYTHONPATH=/tmp/new/src $V/python -m pytest -q -m "not slow" -p no:cacheprovider 2>&1 | tail -1; e=$(date +%s); echo "new seconds: $((e-s))"
} > /tmp/sidebyside.log 2>&1
