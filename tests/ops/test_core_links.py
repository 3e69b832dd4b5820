"""The compiled core is torch-free: its shared object names neither libtorch nor libc10 (nor an OpenMP runtime) among
the libraries it needs (`readelf -d`), so one build serves every torch version."""

import shutil
import subprocess

import pytest

from mome.ops import _library


@pytest.mark.skipif(_library._C is None, reason="the compiled core is not built")
@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) not installed")
def test_core_links_no_torch():
    out = subprocess.run(["readelf", "-d", _library._C.__file__], check=True, capture_output=True, text=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    assert needed, out
    for lib in needed:
        assert not lib.startswith(("libtorch", "libc10", "libgomp", "libomp", "libiomp", "libcudart")), needed
