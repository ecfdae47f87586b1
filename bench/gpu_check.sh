#!/usr/bin/env bash
# The render node's GPU check: the full-size benchmark and the GPU tests in one run, on a CUDA
# machine that has python3 with torch but may lack diffusers and transformers and may have no
# access to a package index. See docs/render.md, "Checking a GPU machine".
#
#   bash bench/gpu_check.sh prepare        # here, with PyPI: the missing wheels into .whl/
#   bash bench/gpu_check.sh [BUDGET_S]     # there, from the repository root (default 570 s)
#
# Environment: PYTHON (the interpreter; prepare: .venv/bin/python, run: python3), WHEELS
# (the wheel folder, .whl), GPU_PYTHON (prepare: the GPU machine's Python, 3.12),
# TORCHAO_VERSION (prepare: also fetch torchao for the float8 run), BENCH_ARGS (extra
# bench/render.py arguments).
set -uo pipefail

WHEELS=${WHEELS:-.whl}
# What the node needs beyond torch, numpy, Pillow, safetensors, huggingface-hub, tokenizers
# and the like (which a CUDA torch image carries): the pipeline libraries, the CLIP vocabulary
# wheel, and two libraries transformers checks the versions of at import.
PACKAGES=(diffusers transformers clip-anytorch regex importlib_metadata)

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    local gpu_python=${GPU_PYTHON:-3.12}
    mkdir -p "$WHEELS"
    case $WHEELS in
    /*) ;; # outside the repository
    *)
        if ! git check-ignore -q "$WHEELS/x.whl"; then
            echo "/${WHEELS#./}/" >>.git/info/exclude # wheels never go into the repository
        fi
        ;;
    esac
    local specs=()
    for name in "${PACKAGES[@]}"; do
        # The versions this repository runs with: the ones installed in its environment.
        local version
        version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
            echo "gpu_check: $name is not installed in $py's environment" >&2
            return 1
        }
        specs+=("$name==$version")
    done
    [ -n "${TORCHAO_VERSION:-}" ] && specs+=("torchao==$TORCHAO_VERSION")
    for spec in "${specs[@]}"; do
        # One version of each: two of one package stop the whole install there.
        local stem=${spec%%==*}
        rm -f "$WHEELS/${stem//-/_}"-*.whl "$WHEELS/${stem}"-*.whl
    done
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$gpu_python" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$WHEELS" "${specs[@]}" || return 1
    ls -l "$WHEELS"
    du -sh "$WHEELS"
}

section() {
    printf '\n== %s (%ds into the check)\n' "$1" "$((SECONDS - START))"
}

run() {
    local budget=${1:-570}
    local py=${PYTHON:-python3}
    START=$SECONDS
    export PYTHONUNBUFFERED=1
    section "environment"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        local site=${TMPDIR:-/tmp}/talos-gpu-site
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$WHEELS"/*.whl || return 1
        export PYTHONPATH=$site
    fi
    # The render package from this tree, no install needed.
    export PYTHONPATH=services/render${PYTHONPATH:+:$PYTHONPATH}
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
    "$py" - <<'EOF' || return 1
import shutil
import torch, diffusers, transformers
print(f"python torch {torch.__version__} cuda {torch.version.cuda}, diffusers {diffusers.__version__}, "
      f"transformers {transformers.__version__}; C compiler: {shutil.which('cc') or shutil.which('gcc')}")
assert torch.cuda.is_available(), "no CUDA device"
print(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
try:
    import torchao
    print("torchao", torchao.__version__)
except ImportError:
    print("torchao: not installed (the float8 run is skipped)")
EOF

    # The benchmark first: its figures are what this check is for. It gets what the tests
    # are not expected to need (they compile the small model for two sizes).
    local tests_budget=200
    local bench_budget=$((budget - tests_budget - (SECONDS - START)))
    section "bench/render.py --device cuda (limit ${bench_budget}s)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    timeout -k 10 "$bench_budget" "$py" bench/render.py --device cuda ${BENCH_ARGS:-}
    local bench_rc=$?
    [ $bench_rc -eq 124 ] && echo "gpu_check: the benchmark ran out of its ${bench_budget}s"

    local left=$((budget - (SECONDS - START) - 5))
    section "pytest -m gpu tests/render/test_gpu.py (limit ${left}s)"
    # The GPU tests need no gRPC or mesh: leave the repository-wide conftest (which starts
    # services) out.
    timeout -k 10 "$left" "$py" -m pytest -m gpu tests/render/test_gpu.py -q -s -p no:cacheprovider \
        --confcutdir=tests/render -W ignore::pytest.PytestConfigWarning
    local tests_rc=$?

    section "done: bench exit $bench_rc, tests exit $tests_rc"
    [ $bench_rc -eq 0 ] && [ $tests_rc -eq 0 ]
}

case "${1:-}" in
prepare) prepare ;;
*) run "${1:-570}" ;;
esac
