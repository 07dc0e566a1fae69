# Sourced by time_to_target.sh and frontier.sh, with NAME set: the folders, the environment every process runs in
# (bytecode caches, as every pip install has them: results/fresh_process.md), the GPU and torch said, the store
# $OUT/NAME.db as $U, and the compile cache of `run --recipe mnist-fast` warmed in $W.
set -uo pipefail
OUT=${OUT:-.}
W=${W:-/tmp/$NAME}
mkdir -p "$W" "$OUT"
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$W/pycache}
REPO=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
U="sqlite:///$(cd "$OUT" && pwd)/$NAME.db"
cd "$W" || exit 1
python3 -m vitbench run --recipe mnist-fast --max-steps 20 --tracking-uri "sqlite:///$W/warm.db" --quiet >/dev/null
