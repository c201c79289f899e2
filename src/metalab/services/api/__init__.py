"""HTTP API over the services (FastAPI), and a typed Python client for it."""
