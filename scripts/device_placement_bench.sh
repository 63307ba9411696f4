#!/usr/bin/env bash
# Times the C++ placement core on a quiet machine (no Ray, no Python needed): builds
# src/scheduler/tests/placement_bench.cc with g++ -O2 and runs its standard table plus the
# 100k-task shapes, writing the output to $OUT (or ./placement_bench.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}/placement_bench.txt"
nproc; g++ --version | head -1
srcs=$(ls src/scheduler/*.cc | grep -v _test.cc)
g++ -std=c++17 -O2 -I. $srcs src/scheduler/tests/placement_bench.cc -o /tmp/placement_bench
{
  echo "# standard table"; /tmp/placement_bench
  for shape in "10000 1024 1" "10000 1024 3" "100000 16 1" "100000 16 3" "100000 128 1" \
               "100000 128 3" "100000 1024 1" "100000 1024 3"; do
    for policy in locality spread; do
      /tmp/placement_bench $shape 5 $policy
    done
  done
} | tee "$out"
