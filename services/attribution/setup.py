"""Builds attribution's optional C reader (tally_attribution/_impression_reader.c) at ``pip install`` time.

Everything else is in pyproject.toml. ``optional=True``: if the compiler or the Python headers are
missing the install still succeeds and the processor decodes impressions with fastavro alone (same
results, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tally_attribution._impression_reader", ["tally_attribution/_impression_reader.c"],
                             extra_compile_args=["-O2"], optional=True)])
