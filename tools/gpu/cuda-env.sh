# Sourced (bash), not run: makes this shell able to build the workspace with
# `--features cuda` on a machine with no GPU and no CUDA installation.
#
#   . tools/gpu/cuda-env.sh [DIR]     # DIR: where the toolkit goes (default target/cuda/toolkit)
#
# What candle's CUDA build needs, and where it comes from here:
# - nvcc, its NVVM back end and the CUDA headers, for candle-kernels' build script (it
#   compiles the kernels to PTX and a static library with nvcc): NVIDIA's PyPI packages,
#   pinned below, installed with pip into DIR (not system-wide);
# - libraries to link against: cudarc is built with `dynamic-linking` (candle-core asks for
#   it), so every binary and test executable links -lcuda -lnvrtc -lcurand -lcublas
#   -lcublasLt and -lcudart. libcudart comes with the runtime package; the other five are
#   link stubs made here with gcc: one empty function per symbol cudarc declares for that
#   library, under the real library's soname, as lib<name>.so in the toolkit's lib/ (cudarc's
#   build script adds the lib/ folders under CUDA_ROOT that exist when it runs; this one
#   always does). Only the linker reads those files: a binary linked against them loads the
#   real libraries by soname at run time, the driver's libcuda.so.1 and the CUDA libraries
#   (e.g. PyTorch's nvidia-* wheels) found through LD_LIBRARY_PATH.
#
# Exports CUDA_ROOT, PATH (nvcc first: cudarc reads the CUDA version from `nvcc --version`)
# and CUDA_COMPUTE_CAP (default 90: Hopper, the H100 and H200). STYLEFORGE_CUDA_RELEASE
# picks the pinned toolkit: 13.2 (default) or 13.0. PTX from a newer toolkit does not load
# on an older driver, so a build meant to run on a driver of the CUDA 13.0 series (580.x)
# uses 13.0.

_sf_cuda_setup() {
    local repo dir release pins
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    dir=${1:-$repo/target/cuda/toolkit}
    release=${STYLEFORGE_CUDA_RELEASE:-13.2}
    case "$release" in
        13.2)
            pins="nvidia-cuda-nvcc==13.2.86 nvidia-nvvm==13.2.86 nvidia-cuda-crt==13.2.86 nvidia-cuda-runtime==13.2.86 nvidia-cuda-cccl==13.2.86"
            ;;
        13.0)
            pins="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85"
            ;;
        *)
            echo "cuda-env.sh: STYLEFORGE_CUDA_RELEASE=$release: use 13.2 or 13.0" >&2
            return 1
            ;;
    esac
    command -v python3 >/dev/null || { echo "cuda-env.sh: python3 (with pip) is needed to install nvcc" >&2; return 1; }
    command -v gcc >/dev/null || { echo "cuda-env.sh: gcc is needed (nvcc's host compiler, link stubs)" >&2; return 1; }

    # Reinstalled when the pins change (a marker holds the ones installed).
    if [ "$(cat "$dir/.pins" 2>/dev/null)" != "$pins" ]; then
        echo "installing the CUDA $release toolkit into $dir" >&2
        rm -rf "$dir"
        # shellcheck disable=SC2086
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --no-deps --target "$dir" $pins || return 1
        echo "$pins" >"$dir/.pins"
    fi
    local root="$dir/nvidia/cu13"
    [ -x "$root/bin/nvcc" ] || { echo "cuda-env.sh: no nvcc in $root/bin" >&2; return 1; }

    # -lcudart needs the unversioned name; the wheel ships libcudart.so.13 only.
    ln -sf libcudart.so.13 "$root/lib/libcudart.so"
    _sf_cuda_stubs "$repo" "$root/lib" || return 1

    export CUDA_ROOT="$root"
    export PATH="$root/bin:$PATH"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
}

# Link stubs for the libraries cudarc links, from the functions cudarc declares for each.
_sf_cuda_stubs() {
    local repo=$1 out=$2 cudarc
    cudarc=$(cd "$repo" && cargo metadata --format-version 1 --locked --features styleforge-cli/cuda 2>/dev/null |
        python3 -c 'import json, os, sys
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"]
print(os.path.dirname(pkgs[0]["manifest_path"]) if pkgs else "")') || return 1
    [ -d "$cudarc/src" ] || { echo "cuda-env.sh: cudarc's source not found (cargo fetch first?)" >&2; return 1; }
    mkdir -p "$out"
    local spec lib soname module
    for spec in cuda:libcuda.so.1:driver nvrtc:libnvrtc.so.13:nvrtc curand:libcurand.so.10:curand \
        cublas:libcublas.so.13:cublas cublasLt:libcublasLt.so.13:cublaslt; do
        IFS=: read -r lib soname module <<<"$spec"
        [ -f "$out/lib$lib.so" ] && [ "$out/lib$lib.so" -nt "$cudarc/src/$module/sys/mod.rs" ] && continue
        grep -ohE '^pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$cudarc/src/$module/sys/mod.rs" |
            awk '{print "void " $4 "(void) {}"}' | sort -u >"$out/$lib.c"
        gcc -shared -fPIC -o "$out/lib$lib.so" -Wl,-soname,"$soname" "$out/$lib.c" || return 1
        rm -f "$out/$lib.c"
    done
}

_sf_cuda_setup "$@"
