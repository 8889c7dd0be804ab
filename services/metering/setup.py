"""Builds metering's optional C reader (tally_metering/_fastavro_fields.c) at ``pip install`` time.

Everything else is in pyproject.toml. ``optional=True``: if the compiler or the Python headers are
missing the install still succeeds and metering decodes with fastavro alone (same results, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tally_metering._fastavro_fields", ["tally_metering/_fastavro_fields.c"],
                             extra_compile_args=["-O2"], optional=True)])
