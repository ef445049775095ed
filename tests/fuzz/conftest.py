"""Prints the number of inputs the fuzz suite tried per entry point (issue 18's acceptance asks for the counts)."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.fuzz._harness import ACCEPTED, COUNTS

    if not COUNTS:
        return
    terminalreporter.section("fuzz: inputs tried per entry point")
    terminalreporter.write_line(f"{'entry point':45s} {'tried':>6s} {'accepted':>8s}")
    for entry, n in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{entry:45s} {n:6d} {ACCEPTED[entry]:8d}")
    total = f"total ({len(COUNTS)} entry points)"
    terminalreporter.write_line(f"{total:45s} {sum(COUNTS.values()):6d} {sum(ACCEPTED.values()):8d}")
