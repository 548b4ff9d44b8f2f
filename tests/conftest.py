import torch

# The models here are small: one intra-op thread is fastest, and on a shared 2-core machine
# OpenMP's spinning threads make tiny ops up to 100x slower when another process is busy.
torch.set_num_threads(1)
