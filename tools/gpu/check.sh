#!/usr/bin/env bash
# The GPU check: parity tests on a CUDA GPU, then StyleForge beside PyTorch + diffusers on
# the same GPU (an SD-1.5 training step at 512 px, 30-step DDIM generation, and 5-step
# generation timed by stage): step times, peak GPU memory, ratios. Built beforehand on any
# machine, run on the GPU machine.
#
#   tools/gpu/check.sh build            # here: the CUDA binary and test executables
#   tools/gpu/check.sh run [options]    # there: runs them (no compiler needed)
#   tools/gpu/check.sh --dry-run        # both, on the CPU at tiny sizes, without CUDA
#
# run options: --tests-only, --bench-only, --python PY (one with torch + diffusers;
# default python3), --repeats N (timed steps a workload, default 3), --out DIR (results,
# default target/gpu-check/results), --dry-run. See tools/gpu/README.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

mode=""
dry_run=0
parts=all
python=python3
repeats=3
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        build | run) mode=$1 ;;
        --dry-run) dry_run=1 ;;
        --tests-only) parts=tests ;;
        --bench-only) parts=bench ;;
        --python) python=$2; shift ;;
        --repeats) repeats=$2; shift ;;
        --out) out=$2; shift ;;
        -h | --help) usage ;;
        *) echo "check.sh: unknown argument $1" >&2; usage ;;
    esac
    shift
done
[ -n "$mode" ] || [ "$dry_run" = 1 ] || usage

# The parity tests that run on the GPU: models (text encoder, UNet, VAE), schedulers, and
# one and three training steps against PyTorch.
test_args=(-p styleforge-models --test parity -p styleforge-schedulers --test diffusers_fixtures
    -p styleforge --test training_step)

if [ "$dry_run" = 1 ]; then
    # The dev profile without CUDA, as the test suite builds (no toolkit needed; the
    # package selection still unifies features differently, so some crates recompile).
    base=$repo/target/gpu-check/dry-run
    device=cpu
    train=tiny-styleforge-ckpt-8bit
    generate=tiny-ddim30
    stages=tiny-generate
else
    base=$repo/target/gpu-check
    device=cuda
    train=sd15-512-styleforge-ckpt-8bit
    generate=sd15-512-ddim30
    stages=sd15-generate-512
fi
bundle=$base/bundle
out=${out:-$base/results}

build() {
    local cargo_args=(--locked)
    if [ "$dry_run" = 0 ]; then
        # PTX made by a newer toolkit than the driver does not load: 13.0 runs on every
        # CUDA 13 driver (580 and later).
        export STYLEFORGE_CUDA_RELEASE=${STYLEFORGE_CUDA_RELEASE:-13.0}
        export CARGO_TARGET_DIR=$base/cargo
        # shellcheck source=tools/gpu/cuda-env.sh
        . tools/gpu/cuda-env.sh "$base/toolkit"
        cargo_args+=(--release --features styleforge-cli/cuda)
    fi
    cargo build "${cargo_args[@]}" -p styleforge-cli
    local json
    json=$(mktemp)
    cargo test "${cargo_args[@]}" --no-run --message-format=json "${test_args[@]}" >"$json"
    rm -rf "$bundle"
    mkdir -p "$bundle/tests"
    python3 - "$json" "$bundle" <<'EOF'
import json, os, shutil, sys
msgs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
exes = [m for m in msgs if m.get("reason") == "compiler-artifact" and m.get("executable")]
for m in exes:
    if m["profile"]["test"]:
        shutil.copy2(m["executable"], os.path.join(sys.argv[2], "tests", m["target"]["name"]))
EOF
    rm -f "$json"
    local profile=debug
    [ "$dry_run" = 1 ] || profile=release
    cp "${CARGO_TARGET_DIR:-target}/$profile/styleforge" "$bundle/styleforge"
    strip "$bundle/styleforge" "$bundle"/tests/* 2>/dev/null || true
    echo "built $(ls "$bundle/tests" | wc -l) test executables and styleforge into $bundle"
    if [ "$dry_run" = 0 ]; then
        # One archive to carry to the GPU machine (`run` unpacks it when the folder is
        # absent).
        XZ_OPT="-T0" tar -C "$base" -cJf "$base/bundle.tar.xz" bundle
        du -sh "$bundle" "$base/bundle.tar.xz"
    fi
}

# Where the CUDA libraries the binaries link (cuBLAS, cuBLASLt, cuRAND, NVRTC, the
# runtime) are: PyTorch's nvidia-* wheels when the system has none on its library path.
cuda_library_path() {
    "$python" - <<'EOF' 2>/dev/null || true
import glob, os, sys
dirs = []
for p in sys.path:
    for d in sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib"))):
        if d not in dirs and glob.glob(os.path.join(d, "lib*.so*")):
            dirs.append(d)
print(os.pathsep.join(dirs))
EOF
}

# Peak GPU memory (MiB) over a command's run, from nvidia-smi every 100 ms, less what was
# in use when it started: the same measure for both frameworks (CUDA context included).
# Without a GPU it runs the command and prints "-".
with_gpu_peak() {
    local peak_file=$1 log
    shift
    if [ "$device" = cpu ] || ! command -v nvidia-smi >/dev/null; then
        echo "-" >"$peak_file"
        "$@"
        return
    fi
    log=$(mktemp)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$log" &
    local sampler=$!
    sleep 0.5
    local status=0
    "$@" || status=$?
    sleep 0.3
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    awk 'NR == 1 { base = $1 } { if ($1 > max) max = $1 } END { print max - base }' "$log" >"$peak_file"
    rm -f "$log"
    return "$status"
}

run() {
    if [ ! -d "$bundle" ] && [ -f "$base/bundle.tar.xz" ]; then
        tar -C "$base" -xJf "$base/bundle.tar.xz"
    fi
    [ -x "$bundle/styleforge" ] || { echo "no $bundle/styleforge: run tools/gpu/check.sh build first" >&2; exit 1; }
    mkdir -p "$out"
    rm -f "$out"/*.json "$out"/*.peak
    local failures=()
    if [ "$device" != cpu ]; then
        local libs
        libs=$(cuda_library_path)
        export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    fi
    export STYLEFORGE_TEST_DEVICE=$device STYLEFORGE_FIXTURES=$repo/fixtures
    if [ "$parts" != bench ]; then
        local t
        for t in "$bundle"/tests/*; do
            echo "== parity: $(basename "$t") on $device"
            if ! "$t" --quiet; then
                failures+=("parity test $(basename "$t")")
            fi
        done
    fi
    if [ "$parts" != tests ]; then
        local has_torch=0
        if "$python" -c "import torch, diffusers, transformers" 2>/dev/null; then
            has_torch=1
        else
            echo "== PyTorch side skipped: $python has no torch + diffusers + transformers"
        fi
        local torch_device=$device
        local w
        for w in "$train" "$generate" "$stages"; do
            echo "== $w: StyleForge on $device"
            with_gpu_peak "$out/ours-$w.peak" "$bundle/styleforge" bench --device "$device" \
                --workloads "$w" --warmup 1 --repeats "$repeats" --json "$out/ours-$w.json" ||
                failures+=("StyleForge $w")
            if [ "$has_torch" = 1 ]; then
                echo "== $w: PyTorch + diffusers on $torch_device"
                with_gpu_peak "$out/torch-$w.peak" "$python" tools/bench/bench_torch.py --device "$torch_device" \
                    --workloads "$w" --warmup 1 --repeats "$repeats" --fallback-adamw \
                    --json "$out/torch-$w.json" || failures+=("PyTorch $w")
            fi
        done
        python3 tools/gpu/report.py "$out" "$train" "$generate" "$stages" || failures+=("the report")
    fi
    if [ ${#failures[@]} -gt 0 ]; then
        printf 'FAILED: %s\n' "${failures[@]}"
        exit 1
    fi
    echo "GPU check passed ($device)"
}

case "$mode" in
    build) build ;;
    run) run ;;
    "") build && run ;;
esac
