"""What runs inside Splunk: the app's modular inputs and how a record becomes a Splunk event."""
