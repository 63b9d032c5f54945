"""A single-node Kafka broker from Apache Kafka's jars, for tests, the demo and benchmarks on
machines without Docker. Imports nothing else of streams.
"""
