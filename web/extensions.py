"""Shared extension objects, bound to the app in `create_app`."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


# Views dump what they just committed, and the publisher hands committed jobs on: expiring them at commit
# would re-read every row. (Flask-SQLAlchemy 3 takes session options here, not from app.config.)
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
