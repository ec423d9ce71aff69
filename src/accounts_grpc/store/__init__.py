"""The store: the only package that speaks SQL. One repository per aggregate (accounts.py,
users.py, groups.py ...), each a class bound to a connection, reached through the unit
of work store/db.py makes (``with db.write() as uow: uow.accounts.get(id)``); the use
cases see them through domain/ports.py's protocols.

The SQLite fast paths, each in one place beside its generic twin, where its reason and
its measured gain are written:

- db.py, ``sqlite_tuning``: SQLite's memory statistics off (the ctypes ``sqlite3_config``).
- db.py, ``Database.read(single_statement=True)``: each thread's own connection, no BEGIN.
- rows.py, ``FastSelect``: point reads run on the DBAPI cursor.
- listing/: the FTS5 index and its case-folding probe (filters.py), the index-counted page
  plans and their cost constants (plans.py), the packed pages and the kept statements
  (run.py); PostgreSQL's own: the count's ``random_page_cost`` (plans.py).
"""
