"""The Kafka runtime around the core: ingest, the internal topic, the Faust stateful stage,
its transport fixes, the web API and metrics, client configuration.

May import streams.core and streams.runtime; never streams.tools, streams.local or
streams.commands.
"""
