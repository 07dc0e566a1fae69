"""What our fused Triton attention (``vitbench.models.fused_attention``) takes, readable without importing Triton:
the attention layer refuses a longer sequence when the model is built, the kernel when it is called."""

TRITON_MAX_TOKENS = 128  # one block of keys per head
