"""What travels through Redis and how: the job record (``jobs``), its sealed form
(``envelope``), the reliable kombu transport (``transport`` + Lua) and who owns a claimed
message (``ownership``), clients for every broker URL incl. Sentinel (``clients``), broker errors
named by cause (``failures``), celery-batches with task events (``batches``) and the Celery
configuration that does not lose work (``celeryconf``).

May import ``privacy``, ``audit``, ``config`` and ``errors`` only.
"""
