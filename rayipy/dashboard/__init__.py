"""The dashboard: an HTTP status API and a page served by the head (default port 8265).

Four parts, in the order data flows through them:

- ``history``: pure bookkeeping the head's loop feeds as tasks run (recent tasks in a
  ring buffer, counts per function, when each worker's current task started).
- ``snapshot``: a pure function of the head's state that returns an immutable picture.
- ``server``: the HTTP thread in the head process and the hand-off of snapshots to it.
- ``page``: the HTML (server-rendered, escaped), its script and style.

Imported by the head (``rayipy/node/head.py``); imports only the protocol's records and
the standard library, so it sits beside ``core`` in the layering. This file imports
nothing, so that ``import rayipy`` (which reads ``DEFAULT_PORT``) does not load
``http.server``.
"""

DEFAULT_PORT = 8265


