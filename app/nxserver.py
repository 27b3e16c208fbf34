"""Launch the embedded `nx-27017` store, with one fix for a bug it has.

nx-27017 0.8 serves `renameCollection` by renaming its cached collection object in place, but
leaves that object cached under the *old* name too: afterwards, `org_old` still reads, and a
`drop` of it would drop, the renamed `org_new` table. Real MongoDB has no such cache. We move
the cache entry with the rename so the embedded store behaves like MongoDB here
(`tests/test_real_store.py::test_old_name_is_really_empty_after_rename` pins it).

Run as `python -m app.nxserver [nx-27017 options]`.
"""

from __future__ import annotations

import sys
from typing import Any


def _patch_rename_cache() -> None:
    from neosqlite.collection import Collection

    original = Collection.rename
    if getattr(original, "_orgsvc_patched", False):
        return

    def rename(self: Any, new_name: str) -> None:
        old_name = self.name
        original(self, new_name)
        cache = getattr(getattr(self, "_database", None), "_collections", None)
        if isinstance(cache, dict) and cache.get(old_name) is self:
            del cache[old_name]
            cache[new_name] = self

    rename._orgsvc_patched = True  # type: ignore[attr-defined]
    Collection.rename = rename


def main() -> int:
    _patch_rename_cache()
    from nx_27017.nx_27017 import main as nx_main

    result = nx_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
