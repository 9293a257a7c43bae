"""nvsiem_syslog: the ``syslog+tcp://``, ``syslog+tls://`` and ``syslog+udp://`` sinks.

Each record goes out as one RFC 5424 message whose body is CEF (ArcSight),
LEEF 2.0 (QRadar) or the record as JSON. ``mapping`` holds the one table of
which NeuVector field becomes which CEF key and LEEF attribute; ``cef`` and
``leef`` write the bodies, ``rfc5424`` the header, ``sink`` the transport.
"""
