"""The conductor: a Celery worker on `control` that owns the database side of jobs and hosts."""
