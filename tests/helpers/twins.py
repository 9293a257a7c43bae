"""Running the parser's fast path on its Python twins where the C accelerator is built."""
from contextlib import contextmanager

from nvparser import _fast


@contextmanager
def python_twins():
    """``_fast`` with ``_split_body`` and ``_build`` (as the Splunk app runs it) for the block."""
    saved = _fast.split_body, _fast.build
    _fast.split_body, _fast.build = _fast._split_body, _fast._build
    try:
        yield
    finally:
        _fast.split_body, _fast.build = saved
