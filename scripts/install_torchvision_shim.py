"""Write ``adatp_bench_torchvision_shim.pth`` into the active environment's site-packages.

The .pth line runs at interpreter start-up and only registers an import finder (no torch import), so the cost is nil.
Run by ``make install``; harmless on a GPU machine, where the real torchvision extension loads and the shim stands down.
"""

import site
import sys
from pathlib import Path

LINE = "import adatp_bench._torchvision_shim as _s; _s.install()\n"

target = Path(site.getsitepackages()[0]) / "adatp_bench_torchvision_shim.pth"
if not target.exists() or target.read_text() != LINE:
    target.write_text(LINE)
    print(f"installed {target}", file=sys.stderr)
