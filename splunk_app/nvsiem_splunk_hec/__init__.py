"""The collector's Splunk sink: ``splunk-hec://`` URLs, delivered through HTTP Event Collector with indexer acknowledgement."""
