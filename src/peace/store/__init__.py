"""The embedding store: immutable, checksummed versions written by the offline inference flow.

The one contract between the offline flows (``peace.flows``, which write it) and the service
(``peace.serve``, which reads it). Layout of a store folder (see ``docs/serving.md``)::

    STORE/
      CURRENT                      the served version id (one line; swapped atomically)
      versions/<version>/          one immutable version (never modified once visible)
        manifest.json              model hash, config, cut-off, row counts, sha256 of every file
        users.arrow                user, interests [M*d], universal [d], history_tokens
        entities.arrow             entity, vector [d], prior                (H^G)
        items.arrow                item, domain, entities, vector [d]       (mean of entities)
        prototypes.arrow           prototype, vector [d]                    (P of Eq. 5-9)
        scorer.safetensors         P, the Eq. 9 MLP and the Eq. 2 fusion weights
        catalogues/<domain>.arrow  per target domain: item, entities, vector, prior, popularity
      rankers/<domain>/CURRENT     the served normal ranker of a domain (see peace.flows.publish)
      rankers/<domain>/<version>/  manifest.json, head.safetensors, user/item_codes.arrow
                                   (and user_parts.safetensors, finetune.tune_user_mlp)
      live/<domain>.json           domains and items launched at run time (peace.serve.app)

Modules: :mod:`~peace.store.files` (names, pointer files, Arrow tables, manifests, checksums),
:mod:`~peace.store.atomic` (atomic publication of a folder), :mod:`~peace.store.versions`
(versions: list, serve, roll back, read), :mod:`~peace.store.rankers` (published normal
rankers), :mod:`~peace.store.live` (run-time edits). The package needs numpy, pyarrow, torch and
safetensors, never the entity graph or the user histories.

Example::

    version = StoreVersion.open("store")          # the CURRENT version, checksums verified
    row = version.user_row["u17"]
    version.interests[row]                          # [M, d] interest vectors of Eq. 1
"""

from peace.store.atomic import STALE_TEMP_SECONDS, new_version_id, publish_folder, remove_stale_temp
from peace.store.files import (
    FORMAT,
    LIVE,
    MANIFEST,
    POINTER,
    RANKERS,
    TEMP_PREFIX,
    USER_PARTS,
    VERSIONS,
    StoreError,
    code_column,
    column_array,
    domain_file_name,
    file_entry,
    load_manifest,
    mapped_array,
    read_arrow,
    read_pointer,
    string_array,
    vector_column,
    verify_files,
    write_arrow,
    write_pointer,
)
from peace.store.live import (
    LiveSignature,
    live_lock,
    live_path,
    live_signature,
    read_live,
    write_live,
)
from peace.store.rankers import (
    current_rankers,
    list_rankers,
    ranker_domains,
    ranker_path,
    ranker_root,
    served_domains,
    set_current_ranker,
)
from peace.store.versions import (
    Catalogue,
    StoreVersion,
    current_version,
    list_versions,
    published_versions,
    set_current,
    version_path,
)

__all__ = [
    "FORMAT",
    "LIVE",
    "MANIFEST",
    "POINTER",
    "RANKERS",
    "STALE_TEMP_SECONDS",
    "TEMP_PREFIX",
    "USER_PARTS",
    "VERSIONS",
    "Catalogue",
    "LiveSignature",
    "StoreError",
    "StoreVersion",
    "code_column",
    "column_array",
    "current_rankers",
    "current_version",
    "domain_file_name",
    "file_entry",
    "list_rankers",
    "list_versions",
    "live_lock",
    "live_path",
    "live_signature",
    "load_manifest",
    "mapped_array",
    "new_version_id",
    "publish_folder",
    "published_versions",
    "ranker_domains",
    "ranker_path",
    "ranker_root",
    "read_arrow",
    "read_live",
    "read_pointer",
    "remove_stale_temp",
    "served_domains",
    "set_current",
    "set_current_ranker",
    "string_array",
    "vector_column",
    "verify_files",
    "version_path",
    "write_arrow",
    "write_live",
    "write_pointer",
]
