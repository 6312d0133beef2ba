"""The OR monitoring page and WebRTC ingest: an aiohttp app (``app.py``) with signaling
(``signaling.py``), the page's live feed (``hub.py``) and the service glue (``server.py``)."""
