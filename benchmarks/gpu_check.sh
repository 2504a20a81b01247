#!/usr/bin/env bash
# GPU check for a CUDA machine: the upstream dtype error, our guard, precision and throughput.
# Usage: bash benchmarks/gpu_check.sh [extra gpu_check.py arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 300 python benchmarks/gpu_check.py --device cuda "$@"
