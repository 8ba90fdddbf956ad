"""Pin torch's CPU code paths so the sample generators give the same numbers on any x86-64 machine.

Import this before torch: without it the val-loss sequences changed between the AVX-512 and the generic
kernels and between MKL's AVX-512 and AVX2 modes (seen while making the samples).
"""

import os

os.environ["ATEN_CPU_CAPABILITY"] = "default"
os.environ["MKL_CBWR"] = "COMPATIBLE,STRICT"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
