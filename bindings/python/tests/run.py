# SPDX-License-Identifier: Apache-2.0
"""ctest entry point: runs one pytest test (FILE::TEST) and exits 77 when it was skipped."""
import os
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: run.py FILE::TEST", file=sys.stderr)
        return 2
    try:
        import pytest
    except ImportError:
        print(f"skip: pytest is not installed for {sys.executable} (Debian: python3-pytest)")
        return 77

    class Outcome:
        passed = failed = skipped = 0

        def pytest_runtest_logreport(self, report):
            if report.skipped:
                self.skipped += 1
            elif report.failed:
                self.failed += 1
            elif report.when == "call" and report.passed:
                self.passed += 1

    o = Outcome()
    # A hung test prints every thread's stack well before ctest's timeout kills it.
    hang = os.environ.get("SBX_PYTEST_HANG_DUMP", "200")
    args = ["-q", "-rs", "-p", "no:cacheprovider", "-o", f"faulthandler_timeout={hang}"]
    rc = pytest.main(args + [sys.argv[1]], plugins=[o])
    if rc == 0 and o.skipped and not o.passed:
        return 77
    return int(rc)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
