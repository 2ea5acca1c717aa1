"""The compiled code of what the commands import, in one file the program maps at start.

In a container each import is ~6 file system calls through the image's layers (a cold lookup
in a new container; ~100 us each on a FUSE overlay), and a deploy imports ~450 modules. The
image's build writes this file once (``python -m sidecar.codecache build``); the program
installs it first, and the modules it holds are then loaded from memory without touching the
file system. See docs/design.md, "Start-up: the code cache".

Only standard-library code: this module runs before anything else is imported.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import marshal
import mmap
import os
import sys
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType

TYPE_CHECKING = False  # typing is one of the modules the cache serves
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

FILE_NAME = "sidecar-code.cache"
SIGNATURE = b"sidecar-code-cache 1\n"
_LENGTH_BYTES = 8


def default_path() -> str:
    """Where the image keeps the cache: beside the program's environment (``sys.prefix``)."""
    return os.path.join(sys.prefix, FILE_NAME)


def library_roots() -> list[str]:
    """The folders a cached module may come from: the standard library and site-packages."""
    import sysconfig  # noqa: PLC0415 - the build's only

    paths = sysconfig.get_paths()
    roots = [paths["stdlib"], paths["purelib"], paths["platlib"]]
    return sorted({os.path.realpath(root) for root in roots})


def listings(roots: Iterable[str]) -> dict[str, list[str]]:
    """What the cache is checked against: each root's listing. Installing, removing or
    upgrading a distribution changes it (a dist-info folder's name carries the version), and
    the cache is then not used."""
    found: dict[str, list[str]] = {}
    for root in roots:
        try:
            found[root] = sorted(os.listdir(root))
        except OSError:
            found[root] = []
    return found


class CachedSourceLoader(importlib.machinery.SourceFileLoader):
    """The usual loader of a source file (``__file__``, resources and ``get_source`` as
    always), whose code comes from the cache."""

    def __init__(self, fullname: str, path: str, cache: CodeCache, at: tuple[int, int]) -> None:
        super().__init__(fullname, path)
        self.cache = cache
        self.at = at  # (offset in the body, length)

    def get_code(self, fullname: str) -> CodeType | None:
        code = self.cache.code(*self.at) if fullname == self.name else None
        return super().get_code(fullname) if code is None else code

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Pickled or copied (a spec sent to another process), it is the file's own loader."""
        return importlib.machinery.SourceFileLoader, (self.name, self.path)


class CodeCache:
    """A meta path finder for the modules in one cache file."""

    def __init__(
        self, index: dict[str, tuple[str, int, int]], data: mmap.mmap | bytes, body: int
    ) -> None:
        self.index = index  # name -> (source file, offset in the body, length)
        self.data = data
        self.body = body
        self.loaded = 0

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        entry = self.index.get(fullname)
        if entry is None or target is not None:
            return None  # not ours, or a reload: that reads the file again
        origin, offset, length = entry
        package = os.path.basename(origin) == "__init__.py"
        folder = os.path.dirname(origin)
        if path is not None and list(path) != [os.path.dirname(folder) if package else folder]:
            return None  # the parent package's __path__ was changed: let it be searched
        loader = CachedSourceLoader(fullname, origin, self, (offset, length))
        spec = ModuleSpec(fullname, loader, origin=origin, is_package=package)
        spec.has_location = True  # __file__ and __cached__, as the file's own spec has them
        if package:
            spec.submodule_search_locations = [folder]
        return spec

    def code(self, offset: int, length: int) -> CodeType | None:
        """The code at ``offset``; None if it does not unmarshal (the file is read instead)."""
        start = self.body + offset
        try:
            # The image's own file, written by its build: as trusted as the code (a .pyc is
            # marshal too).
            code = marshal.loads(self.data[start : start + length])  # noqa: S302
        except (ValueError, EOFError, TypeError):
            return None
        if not isinstance(code, CodeType):
            return None
        self.loaded += 1
        return code

    def invalidate_caches(self) -> None:
        """Nothing to drop (``importlib.invalidate_caches`` calls it on every finder)."""


def _facts() -> dict[str, object]:
    """What the code and its lookup depend on besides the files: the interpreter, its
    optimisation level (asserts and docstrings), and the search path after its first entry
    (a ``PYTHONPATH`` folder could hold another copy of a module)."""
    return {"python": sys.version, "optimize": sys.flags.optimize, "path": sys.path[1:]}


def load(path: str, roots: Iterable[str] | None = None) -> CodeCache | None:
    """The cache in ``path`` if it can serve this interpreter, search path and roots, else
    None. A missing, foreign, truncated or stale file is not an error: the imports then read
    the file system as they always do."""
    try:
        with open(path, "rb") as handle:
            if handle.read(len(SIGNATURE)) != SIGNATURE:
                return None
            length = int.from_bytes(handle.read(_LENGTH_BYTES), "little")
            header = marshal.loads(handle.read(length))  # noqa: S302 - see CodeCache.code
            body = len(SIGNATURE) + _LENGTH_BYTES + length
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    try:
        modules = header["modules"]
        fits = all(body + offset + size <= len(data) for _, offset, size in modules.values())
        fresh = header["facts"] == _facts() and header["roots"] == listings(
            header["roots"] if roots is None else roots
        )
    except (TypeError, KeyError, ValueError, AttributeError):
        fits = fresh = False
    if not (fits and fresh):
        data.close()
        return None
    return CodeCache(modules, data, body)


def install(path: str | None = None) -> CodeCache | None:
    """Put the cache first on ``sys.meta_path``; None (and nothing changed) without one."""
    cache = load(default_path() if path is None else path)
    if cache is not None:
        sys.meta_path.insert(0, cache)
    return cache


def installed() -> CodeCache | None:
    """The cache this process imports from, if any."""
    return next((f for f in sys.meta_path if isinstance(f, CodeCache)), None)


def cacheable(name: str, module: ModuleType, roots: Sequence[str]) -> str | None:
    """The source file of a module the cache can hold: one loaded from a ``.py`` file under
    the roots by the usual loader, under its own name (not an alias in ``sys.modules``)."""
    spec = getattr(module, "__spec__", None)
    if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
        return None
    origin: str | None = spec.origin
    if not origin or not origin.endswith(".py") or not name == spec.name == module.__name__:
        return None
    real = os.path.realpath(origin)
    if not any(real.startswith(root + os.sep) for root in roots):
        return None
    return origin


def write(path: str, modules: dict[str, ModuleType], roots: Sequence[str]) -> int:
    """Write the cache of every cacheable module in ``modules``; how many it holds."""
    index: dict[str, tuple[str, int, int]] = {}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(modules):
        origin = cacheable(name, modules[name], roots)
        if origin is None:
            continue
        with open(origin, "rb") as handle:
            source = handle.read()
        blob = marshal.dumps(compile(source, origin, "exec", dont_inherit=True))
        index[name] = (origin, offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    header = marshal.dumps({"facts": _facts(), "roots": listings(roots), "modules": index})
    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as handle:
            handle.write(SIGNATURE + len(header).to_bytes(_LENGTH_BYTES, "little") + header)
            for blob in blobs:
                handle.write(blob)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return len(index)


def import_all(package: str) -> None:
    """Import ``package`` and every module under it (what its commands import at the top),
    except ``__main__`` modules, which run the program."""
    import pkgutil  # noqa: PLC0415 - the build's only

    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if info.name.rpartition(".")[2] != "__main__":
            importlib.import_module(info.name)


def main(argv: Sequence[str]) -> int:
    """``python -m sidecar.codecache build [PATH]``: the image's build step."""
    if not argv or argv[0] != "build" or len(argv) > 2:
        print("usage: python -m sidecar.codecache build [PATH]", file=sys.stderr)
        return 2
    path = argv[1] if len(argv) == 2 else default_path()
    import_all("sidecar")
    count = write(path, dict(sys.modules), library_roots())
    print(f"code cache: {count} modules in {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
