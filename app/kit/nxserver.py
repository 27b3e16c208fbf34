"""Launch the embedded `nx-27017` store, with fixes for two of its gaps.

1. nx-27017 0.8 serves `renameCollection` by renaming its cached collection object in place, but
   leaves that object cached under the *old* name too: afterwards, `org_old` still reads, and a
   `drop` of it would drop, the renamed `org_new` table. Real MongoDB has no such cache. We move
   the cache entry with the rename so the embedded store behaves like MongoDB here
   (`tests/organizations/test_real_store.py::test_old_name_is_really_empty_after_rename` pins it).

2. Its SQLite layer (neosqlite 1.17, `neosqlite.sql_utils.quote_identifier`, which every table,
   index and trigger name passes through before it is spliced into SQL unquoted) allows only
   `[A-Za-z_][A-Za-z0-9_]*`, so every command on a collection such as `org_société_générale`
   (create, insert, createIndexes, renameCollection, drop) fails, although MongoDB and our
   contract accept Unicode names. We also let through names made of those characters plus
   non-ASCII letters and digits (`str.isalnum`). That is still one safe, unquoted SQLite
   identifier: SQLite treats every byte >= 0x80 as an identifier character and has no non-ASCII
   keyword. ASCII names are checked exactly as before; `$`, `.`, `-`, spaces, quotes and the
   like stay refused. Caveat kept from SQLite: identifiers ignore ASCII case only, so `org_é`
   and `org_É` are two collections (as in MongoDB) but `org_é` and `ORG_é` are one (slugs are
   casefolded, so the service never makes both). Change streams on such a collection stay empty
   (neosqlite checks those names separately; the service does not watch tenant collections).
   (`tests/tenancy/test_unicode_names.py` pins it.)

Both patches are idempotent. Run as `python -m app.kit.nxserver [nx-27017 options]`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

# One unquoted SQLite identifier: an ASCII letter, `_` or a non-ASCII letter first, then any of
# those or digits. Python's Unicode `\w` is exactly `str.isalnum()` plus `_`.
_UNICODE_IDENTIFIER = re.compile(r"(?![0-9])\w+")


def _patch_rename_cache() -> None:
    # Imported here: nx-27017 is a development extra, loaded only by this launcher's process.
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


def _patch_unicode_identifiers() -> None:
    # Imported here: nx-27017 is a development extra, loaded only by this launcher's process.
    from neosqlite import sql_utils

    original: Callable[[str], str] = sql_utils.quote_identifier
    if getattr(original, "_orgsvc_patched", False):
        return

    def quote_identifier(identifier: str) -> str:
        if identifier.isascii() or not _UNICODE_IDENTIFIER.fullmatch(identifier):
            return original(identifier)  # unchanged: the same answer and the same errors
        return identifier

    quote_identifier._orgsvc_patched = True  # type: ignore[attr-defined]
    # `quote_table_name` looks `quote_identifier` up in sql_utils at call time; modules that
    # imported the function itself (e.g. the index manager) hold their own reference.
    sql_utils.quote_identifier = quote_identifier
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("neosqlite", "nx_27017")):
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, quote_identifier)


def patch() -> None:
    """Apply every fix to the nx-27017 modules of this process (idempotent)."""
    _patch_rename_cache()
    _patch_unicode_identifiers()


def main() -> int:
    patch()
    # Imported after patching, so every module nx-27017 loads sees the patched functions.
    from nx_27017.nx_27017 import main as nx_main

    result = nx_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
