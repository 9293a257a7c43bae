"""Small JSON state files (cursors, read positions), replaced atomically.

The spool's cursors and the sources' read positions are such files: a crash
leaves the old state or the new, and a state that cannot be read means
"start from the beginning" (records may be sent again; none is skipped).
"""
import errno
import logging
import os

from nvparser import json_dumps, json_loads

log = logging.getLogger("nvsiem.state")


def load_state(path: str, default: dict) -> dict:
    """A small JSON state file (cursor, read position), or ``default`` if there is none yet.

    A file cut short (see ``save_state``) also gives ``default``, the start:
    what was already delivered may be sent again, nothing is skipped.
    """
    try:
        with open(path, "rb") as f:
            return json_loads(f.read())
    except FileNotFoundError:
        return default
    except ValueError:
        log.warning("%s cannot be read (cut by a crash while the disk was full?): starting from the beginning; "
                    "records already delivered may be sent again", path)
        return default


def save_state(path: str, state: dict) -> None:
    """Replace a state file atomically: a crash leaves the old or the new one, never half.

    On a full disk there is no block for the new file, so the old one is
    overwritten in place, within the block it has: saving a cursor is what
    lets confirmed segments go, so it must not wait for room. Only a crash
    in that one write can leave the file cut (``load_state`` copes).
    """
    data = json_dumps(state)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno != errno.ENOSPC or not os.path.exists(path):
            raise
        with open(path, "r+b") as f:
            # Spaces after a JSON value are allowed: a shorter state leaves no old bytes behind.
            f.write(data.ljust(os.fstat(f.fileno()).st_size))
        try:
            os.unlink(tmp)
        except OSError:
            pass
