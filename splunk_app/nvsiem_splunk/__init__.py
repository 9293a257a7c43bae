"""Splunk side of the pack: the HEC sink and the helpers the Splunk app shares."""
