"""What a fresh worker process spends importing, lap by lap (scripts/reproduce/scaling.sh): python3 THIS LABEL."""
# ruff: noqa: I001, F401, E401, E402  (the imports, in this order, are what is timed)

import sys
import time

t = T = time.perf_counter()


def lap(name):
    global t
    now = time.perf_counter()
    print(f"{sys.argv[1]} {name} {now - t:.2f}", flush=True)
    t = now


import mlflow  # noqa: E402
lap("mlflow")
import torch  # noqa: E402
lap("torch")
import vitbench.cells, vitbench.runner  # noqa: E401, E402
lap("vitbench.runner (seaborn)")
import mlflow.store.tracking.sqlalchemy_store  # noqa: E402
lap("sqlalchemy_store")
try:
    import IPython  # noqa: F401
    lap("IPython")
except ImportError:
    lap("IPython (absent)")
import torch._dynamo  # noqa: E402
lap("torch._dynamo")
import torch._inductor.compile_fx  # noqa: E402
lap("torch._inductor.compile_fx")
if torch.cuda.is_available():
    torch.ones(8, 8, device="cuda").matmul(torch.ones(8, 8, device="cuda"))
    lap("CUDA context")
print(f"{sys.argv[1]} total {time.perf_counter() - T:.2f}", flush=True)
