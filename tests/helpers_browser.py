"""Headless Chromium for tests: Debian's package, which CI installs when it is missing
(Playwright's own browser download is not reachable from CI's machines)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def may_install() -> bool:
    """Installing system packages is for CI (CI=true) or when asked, and needs root."""
    return (hasattr(os, "geteuid") and os.geteuid() == 0
            and (os.environ.get("CI") == "true"
                 or os.environ.get("LSTMLM_INSTALL_CHROMIUM") == "1"))


def chromium() -> str:
    """The path of a chromium executable; installs Debian's package where allowed, else
    skips the test saying how to get one."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if not may_install():
        pytest.skip("no chromium; to install Debian's package, run as root with CI=true or "
                    "LSTMLM_INSTALL_CHROMIUM=1 (or `apt-get install chromium`)")
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("chromium") or pytest.fail("apt-get installed no chromium")
