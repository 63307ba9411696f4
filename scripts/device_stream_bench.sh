#!/usr/bin/env bash
# The streaming benchmark on a lent quiet machine with no registry access: Ray's wheel
# (split in two, carried in .whlA/ and .whlB/ by two calls) and a few of its pure-Python
# needs are installed into /tmp/site; the C++ extension is built there. Output in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .whlA ] && mkdir -p /tmp/keep && cp .whlA/* /tmp/keep/
if [ "${1:-}" = "stage" ]; then ls -la /tmp/keep; exit 0; fi
cp .whlB/* /tmp/keep/
cat /tmp/keep/ray.part.* > /tmp/keep/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
rm /tmp/keep/ray.part.*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site /tmp/keep/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
export PATH=/tmp/site/bin:$PATH
python3 setup.py -q build_ext --inplace 2>&1 | tail -2
nproc
timeout "${BENCH_TIMEOUT:-420}" python3 bench/stream.py --sizes "${SIZES:-1,4,16}" \
  --schedulers "${SCHEDULERS:-vanilla+fuse,locality,locality-noexec,inferred}" \
  --iterations "${ITERATIONS:-30}" --no-progress \
  --json "$OUT/stream.json" --plots "$OUT/plots" 2>&1 | grep -v "^(raylet)\|INFO" | tail -80
