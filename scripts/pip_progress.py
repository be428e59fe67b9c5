"""Show progress while pip compiles llama.cpp: reads `pip install -v` output on stdin.

llama-cpp-python has no wheel on PyPI, so its install compiles llama.cpp (5 to 10 minutes on two
cores). pip prints nothing for minutes unless asked to be verbose, and then it prints thousands of
compiler lines. This filter keeps the full output in a log file and shows one status line: the
build step counter ninja prints (``[57/140]``), the elapsed time, and pip's own short messages.
Used by the Makefile; exits with pip's exit status given as the first argument's file.
"""
from __future__ import annotations

import re
import sys
import time

STEP = re.compile(r"\[(\d+)/(\d+)\]")
KEEP = ("Collecting", "Building wheel", "Created wheel", "Successfully", "Using cached", "ERROR", "error:")


def main() -> int:
    log_path = sys.argv[1] if len(sys.argv) > 1 else "pip-install.log"
    start = time.monotonic()
    tty = sys.stdout.isatty()
    last_shown = 0.0
    with open(log_path, "w") as log:
        for line in sys.stdin:
            log.write(line)
            elapsed = time.monotonic() - start
            m = STEP.search(line)
            if m:
                done, total = int(m.group(1)), int(m.group(2))
                text = f"  compiling llama.cpp: step {done}/{total} ({100 * done // total}%), {elapsed:.0f} s"
                if tty:
                    sys.stdout.write("\r" + text.ljust(78))
                    sys.stdout.flush()
                elif elapsed - last_shown >= 30 or done == total:
                    print(text, flush=True)
                    last_shown = elapsed
                continue
            stripped = line.strip()
            if stripped.startswith(KEEP):
                if tty:
                    sys.stdout.write("\r" + " " * 78 + "\r")
                print("  " + stripped[:160], flush=True)
    if tty:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
