"""Experiment trackers a cell's record is sent to after it is written (``logger=<name>``; ``conf/logger/``).

Each ``conf/logger/<name>.yaml`` holds nodes with a ``_target_`` class that has ``log_cell(record, run_dir)``; the
runner instantiates them from the config, so it imports none of them, and a tracker's failure is recorded in the
record's provenance without failing the cell.
"""
