#!/usr/bin/env bash
# Run here (with network to PyPI), before a GPU session: downloads into .whl/ (git-ignored) the wheels that
# the GPU machine's image lacks or holds at an older version than corl's requirements, for its Python 3.12
# (its image has torch, accelerate, pyarrow, pandas, pytest and pytest-timeout; it cannot reach a registry).
# The versions are those corl is tested with here. benchmarks/gpu/checks.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl \
    transformers==5.25.0 tokenizers==0.23.3 huggingface_hub==2.4.0 hf-xet==1.8.0 \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 bert-score==0.3.13
du -sh .whl
