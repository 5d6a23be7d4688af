"""All of the drift consumer's side effects: InfluxDB, Prometheus, the labelled-data log."""
