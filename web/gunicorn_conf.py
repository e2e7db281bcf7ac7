"""gunicorn's configuration for `archq api` (`--config python:web.gunicorn_conf`): its error and access logs in
archq's one log format (ARCHQ_LOG_FORMAT, queues/logs.py)."""

from queues.config import Settings
from queues.logs import gunicorn_config

logconfig_dict = gunicorn_config(Settings.from_env().log_format)
