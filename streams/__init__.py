"""tracking-validator: catch duplicate, reused and invalid parcel tracking numbers in real time.

The package follows the data (README, "Architecture"): `core` (pure: decode, validate,
detect), `runtime` (Kafka and Faust around the core), `tools` (offline mode, simulation,
impact), `local` (a broker from Kafka's jars), `commands` (the command line).
"""

__version__ = "0.1.0"
