"""Full-text search: a tantivy index per shard as a candidate filter, the exact matcher as
the judge (docs/search.md).

- :mod:`maild.search.match`: the one exact matcher (IMAP SEARCH's scan uses it too);
- :mod:`maild.search.grams`: texts to n-gram terms, needles to queries;
- :mod:`maild.search.index`: one shard's tantivy index (documents, watermarks, cursor);
- :mod:`maild.search.service`: the indexer thread following the change logs, and the
  searches (``SearchService.search`` for the HTTP API, ``candidates`` for IMAP).
"""

from maild.search.index import Needle
from maild.search.service import SearchService, of

__all__ = ["Needle", "SearchService", "of"]
