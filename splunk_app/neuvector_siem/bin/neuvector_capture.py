"""Modular input neuvector_capture://: capture files dropped in a directory (see README/inputs.conf.spec)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from nvsiem_splunk.modinput_files import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
