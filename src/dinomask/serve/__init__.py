"""HTTP service and web page (``dinomask serve``); needs the ``serve`` extra (fastapi, uvicorn)."""
