"""The application: the ``keras-mld`` command (``cli``), the jobs behind it (``workflows``),
the demos (``demo``, ``zsl_demo``) and the head benchmark (``bench``, ``bench_report``).

It uses the library; no library module imports it.
"""
