"""The code cache: modules load from it with no file system call, exactly as from their files
(``__file__``, resources, source), and a stale, foreign or broken cache is never used."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sidecar import codecache

REPO = Path(__file__).resolve().parents[2]


def _library(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("FROM_INIT = 'init'\n")
    (root / "pkg" / "mod.py").write_text(
        "import pkg.sub.leaf\n\ndef value():\n    return 'mod:' + pkg.sub.leaf.LEAF\n"
    )
    (root / "pkg" / "sub" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "leaf.py").write_text("LEAF = 'leaf'\n")
    (root / "pkg" / "data.txt").write_text("a resource\n")
    return root


def _python(script: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


BUILD = """
    import json, sys
    from sidecar import codecache
    cache, root = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        sys.version = sys.argv[3]
    sys.path.insert(0, root)
    import pkg.mod
    alias = sys.modules["pkg.alias"] = sys.modules["pkg.sub.leaf"]  # as requests.packages does
    sys.path.remove(root)  # the search path the cache is for: USE adds root after installing
    count = codecache.write(cache, dict(sys.modules), [root])
    print(json.dumps({"count": count}))
"""

USE = """
    import json, os, sys
    from sidecar import codecache
    cache_path, root = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        sys.path.append(sys.argv[3])  # another folder on the search path
    import importlib.resources, inspect, pickle  # before the root is on sys.path
    cache = codecache.install(cache_path)  # its own check lists the roots: before the hook
    opened = []
    sys.addaudithook(
        lambda event, args: opened.append(str(args[0]))
        if event in ("open", "os.listdir", "os.scandir") and str(args[0]).startswith(root)
        else None
    )
    sys.path.insert(0, root)
    import pkg.mod
    files_opened = list(opened)
    print(json.dumps({
        "installed": cache is not None,
        "loaded": cache.loaded if cache else 0,
        "value": pkg.mod.value(),
        "init": pkg.FROM_INIT,
        "file": pkg.mod.__file__,
        "package_path": list(pkg.__path__),
        "loader": type(pkg.mod.__loader__).__name__,
        "resource": importlib.resources.files("pkg").joinpath("data.txt").read_text(),
        "source": inspect.getsource(pkg.sub.leaf),
        "pickled_loader": type(pickle.loads(pickle.dumps(pkg.mod.__spec__)).loader).__name__,
        "opened": files_opened,
    }))
"""


def test_modules_load_from_the_cache_without_opening_a_file_and_behave_as_from_their_files(
    tmp_path: Path,
) -> None:
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    built = _python(BUILD, str(cache), str(root))
    assert built["count"] == 4  # pkg, pkg.mod, pkg.sub, pkg.sub.leaf; never the alias

    used = _python(USE, str(cache), str(root))
    assert used["installed"] is True
    assert used["loaded"] == 4
    assert used["opened"] == []  # no source, no .pyc, not even a directory listing
    assert used["value"] == "mod:leaf"
    assert used["init"] == "init"
    assert used["file"] == str(root / "pkg" / "mod.py")
    assert used["package_path"] == [str(root / "pkg")]
    assert used["loader"] == "CachedSourceLoader"
    assert used["resource"] == "a resource\n"
    assert used["source"] == "LEAF = 'leaf'\n"
    assert used["pickled_loader"] == "SourceFileLoader"  # a spec sent elsewhere: the file's


def test_without_a_cache_the_same_imports_read_the_files(tmp_path: Path) -> None:
    root = _library(tmp_path)
    used = _python(USE, str(tmp_path / "absent.cache"), str(root))
    assert used["installed"] is False
    assert used["value"] == "mod:leaf"
    opened = used["opened"]
    assert isinstance(opened, list)
    assert any(str(path).endswith("mod.py") for path in opened)


def test_a_changed_library_folder_makes_the_cache_stale(tmp_path: Path) -> None:
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    _python(BUILD, str(cache), str(root))
    (root / "newer-1.0.dist-info").mkdir()  # a distribution installed after the build
    used = _python(USE, str(cache), str(root))
    assert used["installed"] is False
    assert used["value"] == "mod:leaf"


def test_a_cache_of_another_interpreter_is_not_used(tmp_path: Path) -> None:
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    _python(BUILD, str(cache), str(root), "3.0.0 (another build)")
    assert _python(USE, str(cache), str(root))["installed"] is False


def test_another_search_path_or_optimisation_level_does_not_use_the_cache(
    tmp_path: Path,
) -> None:
    """A PYTHONPATH folder could hold another copy of a cached module; -O drops asserts."""
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    _python(BUILD, str(cache), str(root))
    other = tmp_path / "patch"
    other.mkdir()
    assert _python(USE, str(cache), str(root), str(other))["installed"] is False
    optimized = subprocess.run(
        [sys.executable, "-O", "-c", "import sys; from sidecar import codecache; "
         "print(codecache.load(sys.argv[1]) is None)", str(cache)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert optimized.stdout.strip() == "True"


RELOAD = """
    import importlib, json, sys
    from sidecar import codecache
    cache_path, root = sys.argv[1], sys.argv[2]
    cache = codecache.install(cache_path)
    sys.path.insert(0, root)
    import pkg.sub.leaf
    before = pkg.sub.leaf.LEAF
    with open(pkg.sub.leaf.__file__, "w") as handle:
        handle.write("LEAF = 'edited'\\n")
    importlib.reload(pkg.sub.leaf)
    print(json.dumps({"installed": cache is not None, "before": before,
                      "after": pkg.sub.leaf.LEAF}))
"""


def test_a_reload_reads_the_file(tmp_path: Path) -> None:
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    _python(BUILD, str(cache), str(root))
    done = _python(RELOAD, str(cache), str(root))
    assert done == {"installed": True, "before": "leaf", "after": "edited"}


EXTENDED = """
    import json, sys
    from sidecar import codecache
    cache_path, root, elsewhere = sys.argv[1], sys.argv[2], sys.argv[3]
    cache = codecache.install(cache_path)
    sys.path.insert(0, root)
    import pkg
    pkg.__path__.insert(0, elsewhere)  # as pkgutil.extend_path or a plugin system would
    import pkg.mod
    print(json.dumps({"installed": cache is not None, "file": pkg.mod.__file__}))
"""


def test_a_package_whose_path_was_changed_is_searched_as_usual(tmp_path: Path) -> None:
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    _python(BUILD, str(cache), str(root))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mod.py").write_text("def value():\n    return 'elsewhere'\n")
    done = _python(EXTENDED, str(cache), str(root), str(elsewhere))
    assert done == {"installed": True, "file": str(elsewhere / "mod.py")}


def test_a_damaged_module_is_read_from_its_file(tmp_path: Path) -> None:
    """The header is intact, one module's code is not: that module comes from its file."""
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    _python(BUILD, str(cache), str(root))
    data = bytearray(cache.read_bytes())
    # The header as load() reads it (load itself would refuse this process's search path).
    at = len(codecache.SIGNATURE)
    length = int.from_bytes(data[at : at + 8], "little")
    header = marshal.loads(bytes(data[at + 8 : at + 8 + length]))  # noqa: S302 - ours
    _, offset, size = header["modules"]["pkg.sub.leaf"]
    start = at + 8 + length + offset
    data[start : start + size] = b"\xff" * size
    cache.write_bytes(bytes(data))
    used = _python(USE, str(cache), str(root))
    assert used["installed"] is True
    assert used["loaded"] == 3  # pkg, pkg.mod, pkg.sub; leaf from its file
    assert used["value"] == "mod:leaf"


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: b"not a cache at all",
        lambda data: data[: len(codecache.SIGNATURE) + 12],  # a header cut short
        lambda data: data[:-10],  # the last module's code cut short
        lambda data: codecache.SIGNATURE + (10**6).to_bytes(8, "little") + b"\xff" * 64,
    ],
    ids=["empty", "foreign", "truncated-header", "truncated-body", "garbage-header"],
)
def test_a_broken_cache_is_not_used(tmp_path: Path, damage: object) -> None:
    root = _library(tmp_path)
    cache = tmp_path / "code.cache"
    _python(BUILD, str(cache), str(root))
    cache.write_bytes(damage(cache.read_bytes()))  # type: ignore[operator]
    used = _python(USE, str(cache), str(root))
    assert used["installed"] is False
    assert used["value"] == "mod:leaf"


def test_only_source_modules_under_the_roots_are_cacheable(tmp_path: Path) -> None:
    import json as outside
    import sqlite3.dbapi2

    stdlib = os.path.dirname(os.path.realpath(os.__file__))
    assert codecache.cacheable("json", outside, [stdlib]) == outside.__file__
    assert codecache.cacheable("json", outside, [str(tmp_path)]) is None  # outside the roots
    assert codecache.cacheable("json.alias", outside, [stdlib]) is None  # another name
    assert codecache.cacheable("sys", sys, [stdlib]) is None  # built in: no source file
    assert (
        codecache.cacheable("sidecar.codecache", codecache, [stdlib]) is None
    )  # the checkout is no root
    assert codecache.cacheable("sqlite3", sys.modules["sqlite3"], [stdlib]) is not None  # a package
    # The _sqlite3 extension is loaded by another loader: never cached.
    assert codecache.cacheable("_sqlite3", sys.modules["_sqlite3"], [stdlib]) is None
    assert sqlite3.dbapi2


def test_the_build_command_checks_its_arguments() -> None:
    assert codecache.main([]) == 2
    assert codecache.main(["rebuild"]) == 2
    assert codecache.main(["build", "a", "b"]) == 2


def test_the_program_installs_the_cache_beside_its_environment(tmp_path: Path) -> None:
    """``sidecar`` finds the image's cache at ``sys.prefix``: the modules it holds come from
    it; the collector, off while it imports, is on again when the command runs."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    stdlib = os.path.dirname(os.path.realpath(os.__file__))
    script = """
        import json, sys
        from sidecar import codecache
        import json as j, textwrap
        codecache.write(sys.argv[1], {"textwrap": textwrap}, [sys.argv[2]])
        print(json.dumps({}))
    """
    _python(script, str(prefix / codecache.FILE_NAME), stdlib)
    run = """
        import atexit, gc, json, sys
        sys.prefix = sys.argv[1]
        sys.argv = ["sidecar", "version"]
        from sidecar import codecache, program

        def report():
            caches = [f for f in sys.meta_path if isinstance(f, codecache.CodeCache)]
            loader = type(sys.modules["textwrap"].__loader__).__name__
            print(json.dumps({"caches": len(caches), "textwrap": loader, "gc": gc.isenabled()}))

        atexit.register(report)
        sys.modules.pop("textwrap", None)
        program.run()
    """
    done = _python(run, str(prefix))
    assert done["caches"] == 1
    assert done["textwrap"] == "CachedSourceLoader"
    assert done["gc"] is True  # off while importing only
