"""Moving mail in and out: ``maild import`` (mbox, Maildir) and ``maild export``.

Implementation notes (invariants):

- Bounded memory: an mbox is read one message at a time (mbox.py); appends go to the store
  in batches of at most ``BATCH_MESSAGES`` messages and ``BATCH_BYTES`` octets, each batch
  one group commit (store/bulk.py). A Maildir is listed folder by folder (names only).
  The pages of LMDB's maps the process touched are given back (``Store.release_mapped``,
  store/mapped.py) once its resident file memory passes ``--mapped-max-mb``, checked after
  each batch (export: every ``BATCH_MESSAGES`` messages), so RSS does not grow with the store.
- Resumable without duplicates: each import keeps a journal in
  ``data_dir/imports/<digest of address and source path>.journal``. Before a batch is
  handed to the store, a ``pending`` line lists its sources (mbox offset or Maildir
  folder/unique name) with each body's sha256; after the batch is committed a ``done``
  line records them (and, for an mbox, the offset to go on from). Both are fsynced. A run
  that finds pending sources without their ``done`` (it was interrupted between the two)
  skips those whose sha256 is in the target mailbox already and imports the others, so
  nothing is imported twice and nothing is lost; a message appearing twice in the source
  is imported twice, as it should be. ``--restart`` forgets the journal.
- Faithful: the bytes of each message are kept (line ends become CRLF, and the mbox status
  headers become flags); what cannot be read as a message is reported with its position
  and imported as it is, never a crash; a message the store refuses (over quota, too
  large) is reported and the import goes on.
- Only the store touches LMDB and blob files: this package calls the store's API.
"""
