"""`tracking-validator check`: arguments, stdin (NUMBER or CARRIER<TAB>NUMBER), exit codes."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from streams.commands.cli import main
from streams.core.numbers import generate

REPO = Path(__file__).resolve().parents[2]
KEYS = ["input", "valid", "carrier", "format", "number", "reason"]


def numbers() -> dict[str, str]:
    rng = random.Random("check-command")
    return {
        "usps": generate("usps", "usps_impb", rng),
        "ups": generate("ups", "ups_1z", rng),
        "fedex": generate("fedex", "fedex_express_12", rng),
        "s10": generate("s10", "s10", rng),
    }


def lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines()]


def test_arguments_all_valid(capsys: pytest.CaptureFixture[str]) -> None:
    n = numbers()
    printed = " ".join(n["usps"][i:i + 4] for i in range(0, len(n["usps"]), 4))
    assert main(["check", printed, n["ups"].lower()]) == 0
    out = lines(capsys.readouterr().out)
    assert [list(o) for o in out] == [KEYS, KEYS]
    assert out[0] == {"input": printed, "valid": True, "carrier": "usps",
                      "format": "usps_impb", "number": n["usps"], "reason": None}
    assert out[1]["carrier"] == "ups" and out[1]["number"] == n["ups"]


def test_arguments_with_carrier_and_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    n = numbers()
    bad = n["ups"][:-1] + str((int(n["ups"][-1]) + 1) % 10)
    assert main(["check", "--carrier", "ups", n["ups"], bad, "12"]) == 1
    out = lines(capsys.readouterr().out)
    assert [o["valid"] for o in out] == [True, False, False]
    assert [o["reason"] for o in out] == [None, "check_digit", "format"]
    assert out[1]["format"] == "ups_1z" and out[2]["carrier"] == "ups"


def test_unknown_number_without_carrier(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "not-a-number!"]) == 1
    (out,) = lines(capsys.readouterr().out)
    assert out == {"input": "not-a-number!", "valid": False, "carrier": None, "format": None,
                   "number": "NOTANUMBER!", "reason": "format"}


def test_empty_argument_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ""]) == 1
    (out,) = lines(capsys.readouterr().out)
    assert out["reason"] == "empty" and out["input"] == ""


def test_unknown_carrier_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--carrier", "pony_express", "123"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "unknown courier code 'pony_express'" in captured.err


def test_argparse_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", "--no-such-option"])
    assert exc.value.code == 2


def test_stdin_via_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                        ) -> None:
    n = numbers()
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{n['fedex']}\n\nups\t{n['ups']}\n"))
    assert main(["check"]) == 0
    out = lines(capsys.readouterr().out)
    assert [(o["input"], o["carrier"]) for o in out] == [(n["fedex"], "fedex"),
                                                        (n["ups"], "ups")]


def run_cli(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "check", *args], input=stdin, text=True,
        capture_output=True, cwd=REPO, timeout=60, check=False,
    )


def test_stdin_subprocess_order_tabs_blank_lines_and_exit_code() -> None:
    n = numbers()
    bad_s10 = n["s10"][:-2] + "XX"
    stdin = (
        f"{n['usps']}\n"
        "\n"  # blank lines are skipped
        f"ups\t{n['ups']}\r\n"  # CRLF tolerated
        f"   \n"
        f"s10\t{bad_s10}\n"
        f"dhl\t{n['ups']}\n"  # the line's carrier wins: not a DHL number
        f"royal_mail\t{n['ups']}\n"
        f"\t{n['fedex']}\n"  # empty carrier field: identify
    )
    proc = run_cli([], stdin)
    assert proc.returncode == 1, proc.stderr
    out = lines(proc.stdout)
    assert [list(o) for o in out] == [KEYS] * 6
    assert [(o["carrier"], o["valid"], o["reason"]) for o in out] == [
        ("usps", True, None),
        ("ups", True, None),
        ("s10", False, "country_code"),
        ("dhl", False, "format"),
        ("royal_mail", False, "unknown_carrier"),
        ("fedex", True, None),
    ]
    assert out[0]["input"] == n["usps"] and out[1]["input"] == n["ups"]


def test_stdin_subprocess_with_carrier_option_all_valid() -> None:
    n = numbers()
    proc = run_cli(["--carrier", "usps"], f"420 12345 {n['usps']}\n{n['usps'].lower()}\n")
    assert proc.returncode == 0, proc.stderr
    assert [o["number"] for o in lines(proc.stdout)] == [n["usps"], n["usps"]]


def test_stdin_subprocess_streams_large_input() -> None:
    rng = random.Random("bulk")
    batch = [generate("fedex", "fedex_express_12", rng) for _ in range(2000)]
    proc = run_cli(["--carrier", "fedex"], "\n".join(batch) + "\n")
    assert proc.returncode == 0
    assert [o["number"] for o in lines(proc.stdout)] == batch
