"""Studies on top of single runs: sweeps over grids of overrides and seeds, capacity planning.

Studies exchange only scenarios (plain dicts plus ``--set`` overrides) and run directories, so
their runs can go to any executor: in process, a local process pool, or a Dask cluster.
"""
