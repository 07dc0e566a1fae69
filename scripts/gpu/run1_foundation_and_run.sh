#!/usr/bin/env bash
# Device session 1: every variant on CUDA (fp32 + bf16), the issue-3 MNIST runs with both loaders,
# and token scaling. Run from the repo root on the GPU machine after `source .device/gpu/prelude.sh`.
set -uo pipefail
U=sqlite:///$OUT/mlflow.db
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"
python3 -m pytest tests/test_models.py -m gpu -q -p no:cacheprovider 2>&1 | tail -3
for v in torch-mha vectorized-msa sdpa; do
  for l in gpu dataloader; do
    python3 -m vitbench run --variant $v --dataset mnist --loader $l --num-workers 4 \
      --tracking-uri $U --experiment issue3-mnist --run-name "$v-$l" 2>&1 | grep -E "^(epoch 5|done|error|note)"
  done
done
for l in gpu dataloader; do
  python3 -m vitbench run --variant naive-msa --dataset mnist --loader $l --num-workers 4 --time-budget 40 \
    --tracking-uri $U --experiment issue3-mnist --run-name "naive-msa-$l" 2>&1 | grep -E "^(epoch|done|error|note)"
done
python3 -m vitbench bench --variants sdpa,vectorized-msa,torch-mha,naive-msa --peers timm \
  --image-sizes 28,56,112,224 --batch-sizes 64 --precision bf16 --max-seconds 8 \
  --out $OUT/token_scaling_mnist_bf16.csv --tracking-uri $U 2>&1 | grep -vE "^\s+(naive|sdpa|vector|torch|timm)"
