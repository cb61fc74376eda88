#!/usr/bin/env bash
# Builds the workspace with `--features cuda` on a machine with no GPU, so that the CUDA
# code paths cannot stop compiling unnoticed: clippy with warnings as errors, then every
# test executable (built, not run: running needs a GPU, see tools/gpu/check.sh). `.ci/run`
# runs this; a developer can too. Needs cargo, python3 with pip (the toolkit comes from
# PyPI, tools/gpu/cuda-env.sh) and gcc.
#
# Artifacts go to target/cuda (STYLEFORGE_CUDA_TARGET_DIR), so the CPU build's binaries
# are not replaced; intermediate files share the CPU build's build directory (target, or
# CARGO_BUILD_BUILD_DIR when set), where cargo keeps the two feature sets apart and reuses
# every crate the feature does not change.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

target=${STYLEFORGE_CUDA_TARGET_DIR:-$repo/target/cuda}
export CARGO_TARGET_DIR="$target"
export CARGO_BUILD_BUILD_DIR="${CARGO_BUILD_BUILD_DIR:-$repo/target}"
# shellcheck source=tools/gpu/cuda-env.sh
. tools/gpu/cuda-env.sh "$target/toolkit"

features=(--features styleforge-cli/cuda)
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
cargo test --workspace --locked "${features[@]}" --no-run
