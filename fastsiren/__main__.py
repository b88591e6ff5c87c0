"""``python -m fastsiren ...`` (also ``torchrun --nproc_per_node K -m fastsiren fit ...``)."""

import sys

from .cli import main

sys.exit(main())
