"""The Hydra config tree (groups: model, method, budget, benchmark, experiment, operating_point, logger, paths,
hydra/launcher). Read it through :mod:`adatp_bench.config`, never by file path."""
