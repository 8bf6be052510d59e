"""What a trial measures: the server's Prometheus series (server_metrics) and the client's
bench_serving figures (serving_metrics)."""
