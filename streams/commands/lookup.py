"""Ask the workers' lookup API whether tracking numbers are free: one JSON line per number.

Numbers come from the arguments or, when there are none, from stdin lines `NUMBER` or
`CARRIER<TAB>NUMBER`, as for `check`: a line's CARRIER, else --carrier, else the carrier
identified from the number's shape (check's order). They go to any worker of the group
(--url, its --web-port) in POST /v1/tracking/check batches of at most 1,000; each line is the
contract's answer with `input` (the number as given) first:
    {"input", "tracking_number", "carrier", "valid", "reason", "status", "holders",
     "last_scan", "free_after"}
With --channel (where the labels are being sold, e.g. buy_shipping) the workers' circuit
breaker is asked too: when an incident is open for the number's carrier and that channel,
the line adds `"incident": {incident_id, started_at, alerts, sellers}` and
`"advice": "hold_label_sales"`, whatever the number's status.
A number that cannot be asked (no carrier identified, an unknown CARRIER field, an empty
number) is answered here: status `invalid`, with the validator's reason.

Exit status: 0 when every number is free (or there were none) and no answer advises holding
label sales, 1 when any is not free (held, recently_used, invalid) or any answer carries
`advice` (an open incident of its carrier and channel), 2 on a usage error or when the API
cannot be reached or refuses the request (one line on stderr). The bearer token, when the
workers need one, comes from TRACKING_VALIDATOR_API_TOKEN.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import orjson

from streams.commands.check import input_items
from streams.core.carriers import CARRIER_ORDER
from streams.core.lookup import HOLD_LABEL_SALES, MAX_NUMBERS, RequestError, parse_at, query
from streams.core.outputs import rfc3339
from streams.core.validation import classify
from streams.tools.impact import parse_time

URL_ENV = "TRACKING_VALIDATOR_LOOKUP_URL"
TOKEN_ENV = "TRACKING_VALIDATOR_API_TOKEN"
DEFAULT_URL = "http://127.0.0.1:6066"
TIMEOUT = 30.0
RETRIES = 10  # 503 answers (a rebalance, a recovering owner) retried once a second


class Failure(Exception):
    """A one-line reason to exit 2."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "numbers", nargs="*", metavar="NUMBER",
        help="tracking numbers (default: read stdin, NUMBER or CARRIER<TAB>NUMBER a line)")
    parser.add_argument(
        "--url", default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"a worker's web server (env {URL_ENV}; default {DEFAULT_URL})")
    parser.add_argument(
        "--carrier", metavar="CODE",
        help="courier code for numbers without one (default: identify from the number): "
        + ", ".join(CARRIER_ORDER))
    parser.add_argument(
        "--at", metavar="TIME",
        help="the time to answer for: RFC 3339, or a date (2025-03-01), UTC when it has no "
        "offset, as report --from takes (default: now)")
    parser.add_argument(
        "--channel", metavar="CHANNEL",
        help="the channel the labels are sold through (e.g. buy_shipping): also ask whether "
        "an incident is open for the carrier and channel (exit 1 if so)")


def _at(text: str) -> str:
    """--at as the API's RFC 3339 timestamp: as given when it is one, else a date or a time
    without offset (UTC), as `report --from` reads it."""
    try:
        parse_at(text)
        return text
    except RequestError:
        try:
            moment = parse_time(text)
        except ValueError:
            raise RequestError("bad_at", f"--at {text!r} is not an RFC 3339 timestamp or a "
                               f"date (e.g. 2025-03-01 or 2025-03-01T12:00:00Z)") from None
        return rfc3339(moment)


def _local(number: str, carrier: str | None, reason: str) -> dict[str, Any]:
    """The answer for a number that cannot be asked."""
    return {"tracking_number": classify(number).number, "carrier": carrier, "valid": False,
            "reason": reason, "status": "invalid", "holders": [], "last_scan": None,
            "free_after": None}


class Client:
    def __init__(self, url: str, token: str | None, at: str | None) -> None:
        self.endpoint = url.rstrip("/") + "/v1/tracking/check"
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.at = at

    def check(self, numbers: list[dict[str, str]]) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"numbers": numbers}
        if self.at is not None:
            body["at"] = self.at
        data = orjson.dumps(body)
        for attempt in range(RETRIES + 1):
            request = urllib.request.Request(self.endpoint, data=data, headers=self.headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    results = orjson.loads(response.read())["results"]
                if not isinstance(results, list) or len(results) != len(numbers):
                    raise Failure(f"{self.endpoint} answered {len(results)} results for "
                                  f"{len(numbers)} numbers")
                return results
            except urllib.error.HTTPError as exc:
                if exc.code == 503 and attempt < RETRIES:
                    time.sleep(1.0)
                    continue
                raise Failure(f"{self.endpoint} answered {exc.code}: {_message(exc)}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise Failure(f"cannot reach {self.endpoint}: {reason}") from None
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise Failure(f"{self.endpoint} did not answer with lookup results") from None
            except (ValueError, http.client.HTTPException) as exc:  # e.g. a bad port
                raise Failure(f"cannot ask {self.endpoint}: {exc}") from None
        raise AssertionError("unreachable")


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        error = orjson.loads(exc.read())["error"]
        return f"{error['code']}: {error['message']}"
    except Exception:
        return str(exc.reason)


def _answers(items: Iterable[tuple[str, str | None]], client: Client,
             channel: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(input, answer) per item, in order; asked in batches of MAX_NUMBERS."""
    it = iter(items)
    while batch := list(islice(it, MAX_NUMBERS)):
        answers: list[dict[str, Any] | None] = []
        asked: list[dict[str, str]] = []
        for number, carrier in batch:
            if carrier is None:
                carrier = classify(number).carrier
            if carrier is None:
                answers.append(_local(number, None, classify(number).reason or "format"))
                continue
            try:
                q = query(carrier, number)
            except RequestError as exc:
                answers.append(_local(number, carrier.strip().lower(), exc.code))
                continue
            answers.append(None)
            item = {"carrier": q.carrier, "number": number}
            if channel is not None:
                item["channel"] = channel
            asked.append(item)
        remote = iter(client.check(asked) if asked else [])
        for (number, _), answer in zip(batch, answers, strict=True):
            yield number, answer if answer is not None else next(remote)


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"tracking-validator lookup: error: {message}", file=sys.stderr)
        return 2

    carrier: str | None = None if args.carrier is None else args.carrier.strip().lower()
    if carrier is not None and carrier not in CARRIER_ORDER:
        return fail(f"unknown courier code {args.carrier!r} "
                    f"(known: {', '.join(CARRIER_ORDER)})")
    url = urllib.parse.urlsplit(args.url.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        return fail(f"--url {args.url!r} is not a worker's address: give "
                    f"http://HOST:PORT (its --web-host and --web-port)")
    at = args.at
    if at is not None:
        try:
            at = _at(at)
        except RequestError as exc:
            return fail(exc.message)
    client = Client(args.url.strip(), os.environ.get(TOKEN_ENV), at)
    items = input_items(args.numbers, carrier, "lookup")
    out = sys.stdout
    status = 0
    try:
        for number, answer in _answers(items, client, args.channel):
            if answer["status"] != "free" or answer.get("advice") == HOLD_LABEL_SALES:
                status = 1
            out.write(orjson.dumps({"input": number, **answer}).decode() + "\n")
    except Failure as exc:
        out.flush()
        return fail(str(exc))
    out.flush()
    return status
