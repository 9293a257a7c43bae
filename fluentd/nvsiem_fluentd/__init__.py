"""Fluentd sink for the nvsiem collector: Forward protocol v1 with acknowledged delivery, on fluent-logger."""
