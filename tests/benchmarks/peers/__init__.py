"""quiver side by side with DuckDB's vss extension and raw usearch (``make bench``).

``corpus`` makes the rows and vectors, ``quiver_side``, ``usearch_side`` and ``vss_side`` measure one
system each (``vss_side`` runs in ``.venv-peers`` with its own DuckDB), ``report`` prints the table
and ``driver`` runs it all.
"""
