"""Reports: Table 1 rendering, plots, and the FLOPs table (`python -m adatp_bench.report.flops_table`).

`reference/` holds copies of the published tables (FastVID Tables 1-2, AdaTP headline), for comparison only.
"""
