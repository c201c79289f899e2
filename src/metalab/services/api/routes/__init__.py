"""One ``APIRouter`` per resource; ``app.py`` mounts each under ``/v1/workspaces/{workspace}``."""
