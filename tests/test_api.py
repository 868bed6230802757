"""The top-level API: `import edgenas` exposes exactly `__all__`, lazily, without importing torch."""
import subprocess
import sys

import edgenas


def test_every_name_in_all_resolves_and_dir_lists_them():
    assert edgenas.__all__ == sorted(set(edgenas.__all__))
    for name in edgenas.__all__:
        assert getattr(edgenas, name) is not None, name
    assert set(edgenas.__all__) <= set(dir(edgenas))
    public = {n for n in dir(edgenas) if not n.startswith("_")}
    # Besides __all__, only the subpackages Python binds once they are imported.
    assert {n for n in public - set(edgenas.__all__) if not _is_submodule(n)} == set()


def _is_submodule(name: str) -> bool:
    return type(getattr(edgenas, name)).__name__ == "module" and getattr(edgenas, name).__name__ == f"edgenas.{name}"


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        edgenas.no_such_name  # noqa: B018


def test_names_are_the_library_objects():
    from edgenas.export.api import export_subnet
    from edgenas.search.engine import search
    from edgenas.supernet import Supernet

    assert edgenas.search_subnets is search and edgenas.export_subnet is export_subnet
    assert edgenas.Supernet is Supernet


def test_import_edgenas_does_not_import_torch():
    code = ("import sys, edgenas; print('torch' in sys.modules, 'edgenas.train' in sys.modules); "
            "edgenas.Supernet; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["False", "False", "True"]  # the first use of a name imports what it needs
