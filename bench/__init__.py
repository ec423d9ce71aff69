"""`make bench`: one command that prints the service's throughput beside a bare grpcio echo.

See ``bench/run.py`` for what is measured and how; ``python -m bench.run --help`` for flags.
"""
