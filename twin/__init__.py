"""The digital twin: a SimPy model of demand and clouds that runs the very same policy as live."""
import os

# The twin runs on one thread and its numpy work is small vectors (a week of hourly forecasts): BLAS
# worker threads only spin between those calls, about a tenth of a predictive run's CPU time, and a
# sweep's processes would each start a pool. Set before numpy loads, unless the user chose otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
