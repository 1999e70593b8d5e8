"""The host a benchmark ran on, named in its output so that a figure never loses its processor."""

import platform


def processor() -> str:
    """The CPU's model name (``/proc/cpuinfo``, as ``lscpu`` prints it), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
