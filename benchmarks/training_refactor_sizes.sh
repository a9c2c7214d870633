#!/usr/bin/env bash
# Size and repetition of the training side before and after the issue-16 refactor.
#   bash benchmarks/training_refactor_sizes.sh OLD_TREE NEW_TREE > sizes.txt
# OLD_TREE: a copy of main before the refactor (e.g. `git archive <rev> | tar -x -C /tmp/old`).
# Prints `wc -l` of astrogen/training and astrogen/datasets and the pair count of
# `duplicates --repo astrogen --most 40` (a tool on PATH) for both trees.
set -euo pipefail
for tree in "$1" "$2"; do
  echo "== $tree"
  (cd "$tree" && wc -l astrogen/training/*.py astrogen/datasets/*.py)
  echo "-- duplicates --repo astrogen --most 40"
  (cd "$tree" && duplicates --repo astrogen --most 40 --seconds 120)
done
