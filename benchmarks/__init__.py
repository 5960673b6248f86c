"""fnrelay's benchmark harness: `python -m benchmarks` (or `make bench`).

One run on one machine measures fnrelay through the whole stack (SDK -> broker -> RabbitMQ ->
endpoint -> result back), the peer (Parsl's HighThroughputExecutor, local), the transport's own
limit (a raw pika round trip on the same RabbitMQ) and the memory of the broker and endpoint,
then prints the ratios, writes benchmarks/results/<timestamp>.json and draws a PNG chart.
See docs/performance.md for the method and the numbers.
"""
