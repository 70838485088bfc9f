"""Whether this kernel has the netem qdisc (link impairments); asked once per process."""
from __future__ import annotations

import functools
import shutil
import subprocess


@functools.cache
def netem_available() -> bool:
    """Try to add a netem qdisc in a throw-away anonymous namespace (`unshare --net`).

    The namespace dies with the `tc` process, so nothing is left behind and the root
    namespace is never touched. Without module files to look at (this kernel has none),
    trying is the only reliable test.
    """
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0
