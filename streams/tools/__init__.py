"""Tools around the core without a broker: the offline mode (scan, replay --in-memory), the
event simulator, impact reports, the bundled samples.

May import streams.core and streams.tools; Kafka only inside the commands that need it.
"""
