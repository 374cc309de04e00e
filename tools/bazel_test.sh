#!/usr/bin/env bash
# `bazel test //...` on this checkout, with its .venv interpreter, offline.
#
# Bazel takes only absolute paths for --python_path and --override_repository,
# so this script computes them. Debian's Bazel 4.2.3 cannot download its
# default rule repositories here: they are replaced by the stand-ins in
# tools/bazel/offline and Debian's `bazel-platforms` (BAZEL_OFFLINE=0 skips
# that, with network access). Arguments go to `bazel test`: flags, and
# targets (default //...).
# MovieLens 100K is taken from ../shared unless TFRS_NEGSAMP_ML100K is set.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

make venv
python="$root/.venv/bin/python"
ml100k="${TFRS_NEGSAMP_ML100K:-$root/../shared/data/movielens-100k}"
ml100k="$(cd "$(dirname "$ml100k")" && pwd)/$(basename "$ml100k")"

flags=(
  --python_path="$python"
  --test_env=TFRS_NEGSAMP_ML100K="$ml100k"
)
if [ "${BAZEL_OFFLINE:-1}" != 0 ]; then
  platforms=/usr/share/bazel/tools/platforms
  if [ ! -f "$platforms/WORKSPACE" ]; then
    platforms="$(dirname "$(dpkg -L bazel-platforms | grep -m1 '/platforms/WORKSPACE$')")"
  fi
  offline="$root/tools/bazel/offline"
  flags+=(
    --override_repository=platforms="$platforms"
    --override_repository=rules_cc="$offline/rules_cc"
    --override_repository=rules_java="$offline/rules_java"
    --override_repository=remote_coverage_tools="$offline/remote_coverage_tools"
  )
fi

# Targets default to //... when the arguments are only flags.
targets=//...
for arg in "$@"; do
  case "$arg" in -*) ;; *) targets= ;; esac
done
exec bazel test "${flags[@]}" "$@" $targets
