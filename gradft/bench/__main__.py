"""``python -m gradft.bench``: see ``gradft.bench.step``."""

import os

# GOMP's default waits spin: on a shared 2-core machine a 2-thread step ran 3-6× slower whenever another process
# held a core (measured); passive waits keep it at that core's pace. GOMP reads this once, when torch loads (so
# only the command gets it; an importer, e.g. a test, keeps its own environment).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gradft.bench.step import main  # noqa: E402  (after the environment torch reads on import)

main()
