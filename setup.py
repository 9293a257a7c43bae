"""Everything is declared in setup.cfg but the optional C accelerators.

``nvparser._speedups`` (the parser) and ``nvsiem_syslog._speedups`` (the
syslog sink's CEF and LEEF) are built where a C compiler and Python's
headers are found; where not, the install goes on and each runs its
pure-Python path, which gives the same output (``optional=True``).
"""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("nvparser._speedups", ["parser/nvparser/_speedups.c"], optional=True),
    Extension("nvsiem_syslog._speedups", ["syslog_out/nvsiem_syslog/_speedups.c"], optional=True),
])
