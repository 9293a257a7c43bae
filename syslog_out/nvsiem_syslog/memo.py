"""``Memo``: what a few fields of a record give, computed once per distinct value.

Header fields (name, level, notification, the controller's hostname) take
a handful of values in a whole stream, so their escaped and formatted text
is remembered; a stream of ever new values clears it at ``limit`` keys
rather than grow.
"""
from typing import Callable


class Memo(dict):
    def __init__(self, make: Callable, limit: int = 4096) -> None:
        super().__init__()
        self._make = make
        self._limit = limit

    def __missing__(self, key: tuple):
        if len(self) >= self._limit:
            self.clear()
        value = self[key] = self._make(*key)
        return value

    def get_for(self, key: tuple):
        """``self[key]``; a key that cannot be hashed (a list where a name belongs) is computed each time."""
        try:
            return self[key]
        except TypeError:
            return self._make(*key)
