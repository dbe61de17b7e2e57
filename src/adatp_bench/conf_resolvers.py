"""OmegaConf resolvers used by conf/. Imported by every entry point that composes the config (run, report, preflight).

``${cwd:}`` is the process's working directory. It replaces ``${hydra:runtime.cwd}``, which does not resolve while the
multirun sweeper computes ``hydra.sweep.dir`` nor in configs composed outside a Hydra run (reports, preflight).
"""

import os

from omegaconf import OmegaConf

if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)
