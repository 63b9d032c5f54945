"""`python -m streams.samples`: rewrite incident.jsonl from build_incident()."""

from streams.samples import INCIDENT, build_incident, write_jsonl

write_jsonl(build_incident())
print(INCIDENT)
