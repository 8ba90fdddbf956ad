"""Pin torch's CPU code paths so that a generator rerun on the same machine gives the same numbers.

Import this before torch. It makes a machine reproducible with itself (one thread, ATen's generic
kernels, MKL's conditional-numerical-reproducibility mode); it does NOT make training bit-identical
across machines: CPU vendors, math libraries and torch builds still round differently in the last bits,
so a fixture regenerated elsewhere has other losses than the committed one. Nothing depends on these
pins for correctness: the fixture tests judge a regenerated run by the truth its generator recorded from
the live scheduler (``_truth.py``), never by comparing its numbers with the committed fixture's.

A value already set in the environment wins (``ATEN_CPU_CAPABILITY=avx2 python make_samples.py OUT``
regenerates with the AVX2 kernels), so the suite can be run under each kernel set to show exactly that.
"""

import os

os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
os.environ.setdefault("MKL_CBWR", "COMPATIBLE,STRICT")
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
