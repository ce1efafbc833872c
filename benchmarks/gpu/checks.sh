#!/usr/bin/env bash
# Every GPU check corl has, in one command for a GPU session's machine (run from the repository root, with
# .whl/ from benchmarks/gpu/wheels.sh carried along); each step's output goes to $OUT (default ./gpu-out):
#   1. the environment: GPU, Python, torch, transformers and the packages corl imports;
#   2. the GPU-only tests (`pytest -m gpu`, tests/test_gpu.py);
#   3. benchmarks/memory.py --device cuda: the memory plan against the measured peak, full 1B shape;
#   4. benchmarks/shared_prompts.py --device cuda: packed against row-by-row scoring on the Shapes model.
# Each step has a time limit, 9.5 minutes in all (a device command may run 10). A step that fails does not
# stop the next. DEVICE=cpu runs steps 1 and 2 on CPU (a check of this script).
set -uo pipefail
OUT=${OUT:-gpu-out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

step() {  # step NAME SECONDS COMMAND...: runs COMMAND with a time limit, its output to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - began)) s ($OUT/$name.log)"
    tail -n 15 "$OUT/$name.log"
}

step env 60 python3 - <<'PY'
import importlib, platform
import corl.policy.loading  # noqa: F401  (before torchmetrics: corl's torchvision shim)
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("transformers", "accelerate", "datasets", "tokenizers", "huggingface_hub", "safetensors",
             "torchmetrics", "bert_score", "matplotlib", "PIL", "yaml", "tqdm", "pytest", "corl"):
    try:
        module = importlib.import_module(name)
        print(f"{name:16} {getattr(module, '__version__', 'ok')}")
    except Exception as error:  # a missing package is what this step is for
        print(f"{name:16} MISSING: {error}")
PY
CORL_GPU_TESTS_DEVICE=$DEVICE step tests 180 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
if [ "$DEVICE" = cuda ]; then
    step memory 240 python3 benchmarks/memory.py --device cuda
    step shared_prompts 90 python3 benchmarks/shared_prompts.py --device cuda --repeats 5 --stage-steps 5
fi
