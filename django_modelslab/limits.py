"""ModelsLab's parameter limits, checked at every edge (admin form, API) before any call.

From the API's documentation (../shared/modelslab-api.md §3.1): sides 256 to 1024 pixels in
multiples of 8, 1 to 4 samples, 1 to 50 steps, a seed that fits 32 bits.
"""

from __future__ import annotations

MIN_SIDE = 256
MAX_SIDE = 1024
SIDE_STEP = 8
MIN_SAMPLES = 1
MAX_SAMPLES = 4
MAX_STEPS = 50
MAX_SEED = 2**32 - 1
