"""ASGI entry point for uvicorn: ``uvicorn api.main:app``."""

from api.app import create_app
from core.logging import configure_logging
from core.settings import get_settings

configure_logging(get_settings().log_level, get_settings().log_format)
app = create_app()
