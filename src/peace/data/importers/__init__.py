"""Importers that turn users' data into a peace dataset folder (see ``docs/importing.md``).

* :func:`import_movielens`: GroupLens MovieLens-1M plus the Satori knowledge graph, cut into
  domains by genre.
* :func:`import_recbole`: RecBole atomic files (``.inter``, ``.item``, ``.user``, ``.kg``,
  ``.link``), with domains from an item field or a domain map.

Both write the tables of :mod:`peace.data.contract` and return an :class:`ImportReport`; both fail
with one :class:`~peace.data.contract.DataContractError` naming the file, the line and the fix.
"""

from peace.data.importers.cut import load_cut
from peace.data.importers.movielens import import_movielens
from peace.data.importers.phi import PhiRule
from peace.data.importers.recbole import import_recbole
from peace.data.importers.report import DomainCount, ImportReport

__all__ = [
    "DomainCount",
    "ImportReport",
    "PhiRule",
    "import_movielens",
    "import_recbole",
    "load_cut",
]
