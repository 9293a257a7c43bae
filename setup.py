"""Everything is declared in setup.cfg but the parser's optional C accelerator.

``nvparser._speedups`` is built where a C compiler and Python's headers are
found; where not, the install goes on and the parser runs its pure-Python
path, which gives the same records (``optional=True``).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("nvparser._speedups", ["parser/nvparser/_speedups.c"], optional=True)])
