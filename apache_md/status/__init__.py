"""Monitoring: md-status JSON, the status snapshot, the HTML page and the metrics."""
