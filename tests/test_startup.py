"""The command line starts without the code a warm build never runs (issue 20)."""

from __future__ import annotations

import subprocess
import sys

from slugbuild.lazy_import import lazy_module


def test_the_command_line_imports_no_http_or_image_code_until_used():
    probe = ("import sys, slugbuild.cli, slugbuild.pipeline\n"
             "print(sorted(m for m in ('requests', 'urllib3', 'slugbuild.oci.assemble')"
             " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_lazy_module_is_the_module_once_used():
    import json

    lazy = lazy_module("json")
    assert lazy.dumps({"a": 1}) == json.dumps({"a": 1})
    assert lazy.JSONDecodeError is json.JSONDecodeError  # exceptions match in except clauses
    try:
        lazy.loads("{")
    except lazy.JSONDecodeError:
        pass
    else:
        raise AssertionError("not raised")
